"""SmartMoving's webhooks: the receiver that stores each delivery in the tenant's inbox (``webhook_events``),
the reading of their payloads, and the inbox's queries. The targeted refresh runs that serve the inbox are
Dagster's (``assets/webhooks.py``)."""
