"""``python -m lgm_pipeline.cli.webserver``: Dagster's webserver (same options) behind :class:`WebGuard`.

Dagster 1.13's webserver offers ``--read-only`` and ``--path-prefix`` but no Host check and no way to add
middleware from its command line, so this entry point runs its own CLI with the ASGI app it builds wrapped
in the guard (``lgm_pipeline/cli/webguard.py``). Extra host names come from ``LGM_WEBSERVER_ALLOWED_HOSTS``.
"""

from __future__ import annotations

from typing import Any


def main() -> None:
    import dagster_webserver.cli as webserver_cli

    from lgm_pipeline.cli.webguard import WebGuard, allowed_hosts_from_env

    # The CLI builds its app with this module-level function, then hands it to uvicorn: wrapping it is the
    # one place the guard can go without re-implementing the CLI. An upgrade that renames it must fail here
    # loudly rather than serve an unguarded UI.
    build_app = getattr(webserver_cli, "create_app_from_workspace_process_context", None)
    if build_app is None:
        raise SystemExit("lgm: this dagster-webserver has no create_app_from_workspace_process_context to guard")
    allowed = allowed_hosts_from_env()

    def guarded_app(*args: Any, **kwargs: Any) -> WebGuard:
        return WebGuard(build_app(*args, **kwargs), allowed)

    webserver_cli.create_app_from_workspace_process_context = guarded_app  # type: ignore[assignment]
    webserver_cli.main()


if __name__ == "__main__":
    main()
