"""The Dagster UI of ``lgm up`` in a real (headless) browser: the pages an engineer opens first."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from lgm_pipeline_tests.ui.conftest import LgmUp

#: .ci/run installs Chromium and sets this: in CI a missing browser is a failure, never a skip.
REQUIRE_ENV = "LGM_REQUIRE_CHROMIUM"
BROWSER_TIMEOUT_S = 120
WINDOW = (1600, 1000)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JOURNEYS_LINEAGE = "assets/lgm/journeys?view=lineage&lineageScope=upstream&lineageDepth=3"
# Dagster's "Join the community" dialog covers the page on a fresh instance served from 127.0.0.1.
COMMUNITY_DIALOG = "Join the Dagster community"

Browse = Callable[..., bytes]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    message = "no Chromium on this machine (Debian: apt-get install chromium); .ci/run installs it"
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def browse(tmp_path: Path) -> Browse:
    binary = _chromium()

    def run(url: str, *mode: str) -> bytes:
        command = [
            binary,
            "--headless",
            "--no-sandbox",  # CI runs as root in a container
            "--disable-gpu",
            "--disable-dev-shm-usage",  # containers' /dev/shm is tiny
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            # Virtual time runs the app's requests and timers to completion, then the page is captured.
            "--virtual-time-budget=15000",
            *mode,
            url,
        ]
        # Own session: on a timeout the renderer and zygote processes go with the browser.
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            out, _ = process.communicate(timeout=BROWSER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"Chromium did not finish {url} within {BROWSER_TIMEOUT_S} s")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        assert process.returncode == 0, f"Chromium exited with {process.returncode} on {url}"
        return out

    return run


def _text(dom: str) -> str:
    without_code = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", without_code))


def test_journeys_asset_page_shows_description_sensor_and_latest_partition(lgm_up: LgmUp, browse: Browse) -> None:
    text = _text(browse(lgm_up.url("assets/lgm/journeys"), "--dump-dom").decode(errors="replace"))
    assert "lgm / journeys" in text
    assert "truck journeys, one row per SmartMoving job" in text  # the asset's description
    # what keeps it fresh: the automation (its condition's label) and two sensors, the automation's and the
    # webhook inbox's (its targeted rebuilds); the UI names them behind a "2 sensors" link
    assert "eager after a raw pull" in text and "Sensors 2 sensors" in text
    assert "tenant_lgm.journeys" in text  # where the rows are (IO manager metadata)
    # the latest materialization is one branch x date partition, named as in the partition picker
    assert re.search(r"loc_lgm_[a-z_]+_\d{3}\|\d{4}-\d{2}-\d{2}", text), text[:2000]


def test_asset_graph_renders_the_raw_to_journeys_lineage(lgm_up: LgmUp, browse: Browse, tmp_path: Path) -> None:
    # What the dialog's "Skip" button does; without it the dialog hides the graph in the screenshot.
    answer = httpx.post(lgm_up.url("graphql"), json={"query": "mutation { setNuxSeen }"}, timeout=30)
    assert answer.json() == {"data": {"setNuxSeen": True}}

    text = _text(browse(lgm_up.url(JOURNEYS_LINEAGE), "--dump-dom").decode(errors="replace"))
    for asset in ("smartmoving_customers", "smartmoving_opportunities", "smartmoving_jobs", "journeys"):
        assert asset in text
    assert "lgm_raw" in text and "lgm_journeys" in text  # the two asset groups around them
    assert COMMUNITY_DIALOG not in text

    screenshot = tmp_path / "asset-graph.png"
    browse(lgm_up.url(JOURNEYS_LINEAGE), f"--screenshot={screenshot}")
    image = screenshot.read_bytes()
    assert image.startswith(PNG_SIGNATURE)
    width, height = int.from_bytes(image[16:20], "big"), int.from_bytes(image[20:24], "big")
    assert (width, height) == WINDOW
    # A blank or error page compresses to a few KB; the graph with its nodes and labels does not.
    assert len(image) > 40_000, len(image)
