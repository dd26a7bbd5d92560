"""tokentrail dashboards: write the Grafana dashboard JSON, or push it to a Grafana.

    tokentrail dashboards generate [--out DIR]
    tokentrail dashboards push --url https://grafana.example.com --token glsa_... [--folder tokentrail]

Both use the JSON shipped in the package (what ``python -m tokentrail.dashboards.build`` generates from
code with the grafana-foundation-sdk), so neither needs that SDK; ``push`` needs grafana-client
(``pip install 'tokentrail[grafana]'``). ``push`` creates the folder if needed and creates or overwrites
each dashboard by its uid, so running it twice changes nothing but the version. ``--prometheus-uid``/
``--tempo-uid`` point the dashboards at data sources of an existing Grafana (the defaults are the uids
provisioned by deploy/docker-compose.yaml).
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tokentrail.cli._common import CliError

PUSH_MESSAGE = "tokentrail dashboards push"
DEFAULT_OUT = Path("tokentrail-dashboards")
ENV_URL, ENV_TOKEN = "GRAFANA_URL", "GRAFANA_TOKEN"
#: The data-source uids the shipped JSON uses (dashboards.build's PROMETHEUS and TEMPO).
PROMETHEUS_UID, TEMPO_UID = "tokentrail-prometheus", "tokentrail-tempo"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("dashboards", help="generate the Grafana dashboards, or push them to a Grafana",
                              description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="dashboards_command", metavar="ACTION")
    gen = sub.add_parser("generate", help=f"write the dashboard JSON files (default: ./{DEFAULT_OUT})")
    gen.add_argument("--out", type=Path, default=DEFAULT_OUT,
                     help=f"directory to write the *.json files to (default: ./{DEFAULT_OUT})")
    gen.set_defaults(func=run_generate)
    push = sub.add_parser("push", help="create or update the dashboards in a Grafana (idempotent)")
    push.add_argument("--url", default=os.environ.get(ENV_URL),
                      help=f"Grafana base URL, e.g. https://grafana.example.com (default: ${ENV_URL})")
    push.add_argument("--token", default=None,
                      help=f"a service-account token with Editor rights (default: ${ENV_TOKEN}, which keeps it"
                      " out of the shell history)")
    push.add_argument("--folder", default="tokentrail", help="folder title (created if missing; default: tokentrail)")
    push.add_argument("--prometheus-uid", help="uid of the Prometheus data source to use")
    push.add_argument("--tempo-uid", help="uid of the Tempo data source to use")
    push.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default: 10)")
    push.set_defaults(func=run_push)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def shipped() -> dict[str, str]:
    """File name -> JSON text of the dashboards shipped in the package."""
    folder = importlib.resources.files("tokentrail.dashboards") / "json"
    return {p.name: p.read_text() for p in sorted(folder.iterdir(), key=lambda p: p.name) if p.name.endswith(".json")}


def run_generate(args: argparse.Namespace) -> int:
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} is a file: give a directory to write the dashboard JSON files to")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in shipped().items():
            (out / name).write_text(text)
            print(out / name)
    except OSError as exc:
        raise CliError(f"cannot write the dashboards to {out}: {exc.strerror or exc}") from None
    return 0


def _retarget(node: Any, uids: dict[str, str]) -> Any:
    """Replace data-source uids everywhere in a dashboard."""
    if isinstance(node, dict):
        out = {k: _retarget(v, uids) for k, v in node.items()}
        if out.get("uid") in uids and out.get("type") in ("prometheus", "tempo"):
            out["uid"] = uids[out["uid"]]
        if "datasourceUid" in out and out["datasourceUid"] in uids:
            out["datasourceUid"] = uids[out["datasourceUid"]]
        return out
    if isinstance(node, list):
        return [_retarget(v, uids) for v in node]
    return node


def dashboards_to_push(prometheus_uid: str | None = None, tempo_uid: str | None = None) -> list[dict]:
    uids = {}
    if prometheus_uid:
        uids[PROMETHEUS_UID] = prometheus_uid
    if tempo_uid:
        uids[TEMPO_UID] = tempo_uid
    return [_retarget(json.loads(text), uids) for _, text in sorted(shipped().items())]


class _Grafana:
    """grafana-client calls, with every failure turned into one clear line."""

    def __init__(self, url: str | None, token: str | None, timeout: float):
        if not url:
            raise CliError(f"give the Grafana base URL: --url https://grafana.example.com (or ${ENV_URL})")
        if token is None:
            raise CliError(f"give a Grafana service-account token: ${ENV_TOKEN} (or --token)")
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise CliError(f"--url {url!r} is not a Grafana URL: expected http(s)://host[:port][/path]")
        if not token.strip():
            raise CliError("--token is empty: create a service-account token in Grafana (Administration > "
                           "Service accounts) with the Editor role")
        try:
            from grafana_client import GrafanaApi  # an optional extra: only for `dashboards push`
        except ImportError:
            raise CliError("tokentrail dashboards push needs grafana-client: pip install 'tokentrail[grafana]'") from None

        self.url = url.rstrip("/")
        self.api = GrafanaApi.from_url(self.url, credential=token.strip(), timeout=timeout)

    def call(self, what: str, fn, *args, **kwargs):
        from grafana_client.client import (GrafanaClientError, GrafanaException, GrafanaServerError,  # optional
                                           GrafanaTimeoutError, GrafanaUnauthorizedError)

        try:
            return fn(*args, **kwargs)
        except GrafanaUnauthorizedError:
            raise CliError(f"Grafana at {self.url} rejected the token (401): check --token "
                           "(a service-account token, not expired)") from None
        except GrafanaTimeoutError:
            raise CliError(f"Grafana at {self.url} did not answer in time while trying to {what}") from None
        except GrafanaClientError as exc:
            status = getattr(exc, "status_code", None)
            if status == 403:
                raise CliError(f"the token may not {what} (403 forbidden): give its service account the Editor "
                               "role, or Admin to create folders") from None
            if status == 404:
                raise CliError(f"{self.url} answered 404 while trying to {what}: is this the Grafana base URL "
                               "(including any sub-path)?") from None
            raise CliError(f"Grafana refused to {what} ({status}): {_message(exc)}") from None
        except GrafanaServerError as exc:
            raise CliError(f"Grafana failed to {what} ({getattr(exc, 'status_code', '5xx')}): "
                           f"{_message(exc)}") from None
        except GrafanaException as exc:
            raise CliError(f"Grafana at {self.url}: could not {what}: {_message(exc)}") from None
        except Exception as exc:  # connection refused, DNS, TLS, a non-Grafana server answering HTML
            raise CliError(f"cannot reach Grafana at {self.url} to {what}: {_short(exc)}") from None


def _message(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and response.get("message"):
        return str(response["message"])
    return _short(exc)


_KNOWN = (("Connection refused", "connection refused"), ("Name or service not known", "host not found"),
          ("nodename nor servname", "host not found"), ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"),
          ("timed out", "timed out"))


def _short(exc: Exception) -> str:
    text = str(exc).strip()
    for needle, meaning in _KNOWN:
        if needle in text:
            return meaning
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def push(url: str, token: str, folder: str = "tokentrail", *, prometheus_uid: str | None = None,
         tempo_uid: str | None = None, timeout: float = 10.0) -> list[tuple[str, str, str]]:
    """Create or update the dashboards; returns (action, title, url) per dashboard."""
    grafana = _Grafana(url, token, timeout)
    folders = grafana.call("list folders", grafana.api.folder.get_all_folders)
    if not isinstance(folders, list):
        raise CliError(f"{grafana.url} did not answer like Grafana (GET /api/folders): check --url")
    match = next((f for f in folders if isinstance(f, dict) and f.get("title") == folder), None)
    if match is None:
        match = grafana.call(f"create the folder {folder!r}", grafana.api.folder.create_folder, folder)
    folder_uid = match["uid"]
    done = []
    for dash in dashboards_to_push(prometheus_uid, tempo_uid):
        dash = {**dash, "id": None}
        result = grafana.call(f"save the dashboard {dash['title']!r}", grafana.api.dashboard.update_dashboard,
                              {"dashboard": dash, "folderUid": folder_uid, "overwrite": True,
                               "message": PUSH_MESSAGE})
        action = "created" if result.get("version") == 1 else "updated"
        done.append((action, dash["title"], grafana.url + str(result.get("url", f"/d/{dash['uid']}"))))
    return done


def run_push(args: argparse.Namespace) -> int:
    token = args.token if args.token is not None else os.environ.get(ENV_TOKEN)
    for action, title, url in push(args.url, token, args.folder, prometheus_uid=args.prometheus_uid,
                                   tempo_uid=args.tempo_uid, timeout=args.timeout):
        print(f"{action:8} {title}  {url}")
    return 0
