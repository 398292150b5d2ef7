"""Static pools the world draws from: cities, streets, names, move sizes.

Phone numbers use the fictional 555-01xx range and e-mail addresses the reserved example.*
domains, so simulated records can never reach a real person.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class City:
    name: str
    province: str
    timezone: str
    area_codes: tuple[str, ...]
    postal_prefixes: tuple[str, ...]
    streets: tuple[str, ...]
    lat: float
    lng: float


CITIES: dict[str, City] = {
    c.name.upper(): c
    for c in (
        City(
            "Calgary",
            "AB",
            "America/Edmonton",
            ("403", "587", "825"),
            ("T2A", "T2E", "T2N", "T2S", "T2T", "T3A", "T3E", "T3H"),
            (
                "17 Ave SW",
                "Macleod Trail SE",
                "Edmonton Trail NE",
                "Crowchild Trail NW",
                "Bow Trail SW",
                "Centre St N",
                "4 St SW",
                "Elbow Dr SW",
                "Memorial Dr NE",
                "Kensington Rd NW",
            ),
            51.0447,
            -114.0719,
        ),
        City(
            "Vancouver",
            "BC",
            "America/Vancouver",
            ("604", "778", "236"),
            ("V5K", "V5L", "V5N", "V5T", "V6B", "V6H", "V6K", "V6R"),
            (
                "W Broadway",
                "Commercial Dr",
                "Main St",
                "Kingsway",
                "E Hastings St",
                "Granville St",
                "W 4th Ave",
                "Fraser St",
                "Cambie St",
                "Davie St",
            ),
            49.2827,
            -123.1207,
        ),
        City(
            "Burnaby",
            "BC",
            "America/Vancouver",
            ("604", "778"),
            ("V5A", "V5B", "V5C", "V5E", "V5G", "V5H", "V5J"),
            (
                "Kingsway",
                "Hastings St",
                "Canada Way",
                "Lougheed Hwy",
                "Willingdon Ave",
                "Royal Oak Ave",
                "Edmonds St",
                "Sperling Ave",
            ),
            49.2488,
            -122.9805,
        ),
        City(
            "Toronto",
            "ON",
            "America/Toronto",
            ("416", "647", "437"),
            ("M4C", "M4E", "M4K", "M5A", "M5R", "M5V", "M6G", "M6H", "M6J", "M6R"),
            (
                "Queen St W",
                "Yonge St",
                "Bloor St W",
                "Danforth Ave",
                "Dundas St W",
                "Spadina Ave",
                "Eglinton Ave E",
                "College St",
                "Roncesvalles Ave",
                "Kingston Rd",
            ),
            43.6532,
            -79.3832,
        ),
        City(
            "Edmonton",
            "AB",
            "America/Edmonton",
            ("780", "587", "825"),
            ("T5H", "T5J", "T5K", "T6C", "T6E", "T6G", "T6W"),
            (
                "Jasper Ave NW",
                "Whyte Ave NW",
                "109 St NW",
                "124 St NW",
                "Calgary Trail NW",
                "97 St NW",
                "Stony Plain Rd NW",
                "Fort Rd NW",
            ),
            53.5461,
            -113.4938,
        ),
        City(
            "Winnipeg",
            "MB",
            "America/Winnipeg",
            ("204", "431"),
            ("R2C", "R2H", "R2M", "R3B", "R3G", "R3L", "R3M", "R3T"),
            (
                "Portage Ave",
                "Pembina Hwy",
                "Corydon Ave",
                "Main St",
                "Osborne St",
                "Henderson Hwy",
                "St Mary's Rd",
                "Ellice Ave",
            ),
            49.8951,
            -97.1384,
        ),
        City(
            "Kelowna",
            "BC",
            "America/Vancouver",
            ("250", "236"),
            ("V1P", "V1V", "V1W", "V1X", "V1Y"),
            ("Bernard Ave", "Harvey Ave", "Pandosy St", "Lakeshore Rd", "Gordon Dr", "Springfield Rd"),
            49.8880,
            -119.4960,
        ),
    )
}

# Sales tax on moving services by province (GST, HST or GST+PST).
TAX_RATES: dict[str, float] = {"AB": 0.05, "BC": 0.05, "ON": 0.13, "MB": 0.12}

DEFAULT_UNKNOWN_BRANCH = "KELOWNA 🇨🇦 - Let's Get Moving"


def city_for_branch(branch_name: str) -> City:
    """The city a SmartMoving branch name refers to ("CALGARY 🇨🇦 - ..." -> Calgary)."""
    word = branch_name.strip().split(" ")[0].upper() if branch_name.strip() else ""
    known = CITIES.get(word)
    if known is not None:
        return known
    # An unconfigured branch still needs plausible addresses; Ontario is LGM's largest market.
    name = word.title() or "Unknown"
    return City(
        name, "ON", "America/Toronto", ("905",), ("L4C", "L5B"), ("Main St", "King St", "Queen St"), 43.7, -79.4
    )


FIRST_NAMES: tuple[str, ...] = (
    "Emma",
    "Liam",
    "Olivia",
    "Noah",
    "Ava",
    "Lucas",
    "Sophia",
    "Ethan",
    "Chloé",
    "Mathieu",
    "Zoë",
    "José",
    "Siobhán",
    "François",
    "Amélie",
    "Björn",
    "Łukasz",
    "Priya",
    "Arjun",
    "Harpreet",
    "Mei",
    "Hiroshi",
    "Fatima",
    "Omar",
    "Aisha",
    "Connor",
    "Maëlle",
    "Renée",
    "Noël",
    "Ingrid",
    "Dmitri",
    "Anh",
    "Thanh",
    "Seo-yeon",
    "Ji-ho",
    "Kwame",
    "Nadia",
    "Gabriel",
    "Isabelle",
    "Wyatt",
    "Jean-Luc",
    "Marie-Ève",
    "Raj",
    "Sunita",
    "Carlos",
    "Lucía",
    "Tomás",
    "Hannah",
    "Owen",
    "Grace",
)

LAST_NAMES: tuple[str, ...] = (
    "Smith",
    "Brown",
    "Tremblay",
    "Martin",
    "Roy",
    "Gagnon",
    "Lee",
    "Wilson",
    "MacDonald",
    "Johnson",
    "O'Brien",
    "Núñez",
    "Ní Bhriain",
    "D'Souza",
    "Singh",
    "Patel",
    "Nguyen",
    "Chen",
    "Kim",
    "Wong",
    "Côté",
    "Bouchard",
    "Gauthier",
    "Morin",
    "Lavoie",
    "Fortin",
    "Li",
    "Zhang",
    "Wang",
    "Kaur",
    "Sharma",
    "Gill",
    "Müller",
    "Kowalski",
    "Novak",
    "Ivanov",
    "Okafor",
    "Mensah",
    "Haddad",
    "Khan",
    "Rodríguez",
    "García",
    "McKenzie",
    "O'Neil",
    "St-Pierre",
    "Van der Berg",
    "Ó Súilleabháin",
    "Park",
)

# Whole names typed into the CRM exactly like this; each appears now and then.
ODD_NAMES: tuple[str, ...] = (
    "Zoë O'Brien",
    "José Núñez",
    "Siobhán Ní Bhriain",
    "李 Wei",
    "Nguyễn Văn An",
    "mary-jane watson",
    "ROBERT  DUBOIS",
    "Dr. Anne-Marie St. Laurent",
    "Ahmed Al-Farsi ",
    "Maple Leaf Dental Ltd.",
    "O'Reilly & Sons Contracting",
    "Émilie Bélanger-Côté",
)

MOVE_SIZES: tuple[tuple[str, str, int], ...] = (
    ("Studio", "Studio apartment", 250),
    ("1 Bedroom", "1 bedroom apartment or condo", 400),
    ("2 Bedroom", "2 bedroom apartment or small house", 650),
    ("3 Bedroom", "3 bedroom house", 950),
    ("4 Bedroom", "4 bedroom house", 1300),
    ("5+ Bedroom", "5 or more bedrooms", 1700),
    ("Office", "Small office", 800),
)

SALES_REPS: tuple[str, ...] = (
    "Jordan Ellis",
    "Priya Raman",
    "Marc-André Leduc",
    "Sarah O'Connor",
    "Kevin Tran",
    "Amanda Fischer",
    "Daniel Okoye",
    "Chantal Bérubé",
)

REFERRAL_SOURCES: tuple[str, ...] = (
    "Google",
    "Google",
    "Google",
    "Repeat Customer",
    "Referral",
    "Facebook",
    "Yelp",
    "HomeStars",
    "Instagram",
    "Realtor",
    "Walk-in",
    "Bing",
)

EMAIL_DOMAINS: tuple[str, ...] = ("example.com", "example.net", "example.org", "mail.example.ca")
