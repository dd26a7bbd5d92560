"""`tokentrail dashboards push` with the real grafana-client over real HTTP to a fake Grafana API on 127.0.0.1;
`tokentrail dashboards generate` writes the committed JSON."""

from __future__ import annotations

import itertools
import json

import pytest

from tokentrail.cli import main
from tokentrail.dashboards import build
from tokentrail.testing import FakeProviderServer, FakeResponse

GOOD, READ_ONLY = "glsa_good", "glsa_viewer"


class FakeGrafana:
    """Just the Grafana HTTP API that push uses: bearer-token auth, folders, dashboards/db."""

    def __init__(self):
        self.folders: dict[str, dict] = {}
        self.dashboards: dict[str, dict] = {}
        self.ids = itertools.count(1)
        self.server = FakeProviderServer()
        self.server.route("GET", r"/api/folders", self._guard(self._list_folders))
        self.server.route("POST", r"/api/folders", self._guard(self._create_folder, write=True))
        self.server.route("POST", r"/api/dashboards/db", self._guard(self._save, write=True))

    def _guard(self, handler, write=False):
        def guarded(request):
            token = request.headers.get("authorization") or request.headers.get("Authorization") or ""
            if token not in (f"Bearer {GOOD}", f"Bearer {READ_ONLY}"):
                return FakeResponse(401, json={"message": "Invalid API key"})
            if write and token == f"Bearer {READ_ONLY}":
                return FakeResponse(403, json={"message": "Access denied"})
            return handler(request)
        return guarded

    def _list_folders(self, request):
        return FakeResponse(200, json=[{"id": f["id"], "uid": f["uid"], "title": f["title"]}
                                       for f in self.folders.values()])

    def _create_folder(self, request):
        body = request.json
        folder = {"id": next(self.ids), "uid": body.get("uid") or f"f{len(self.folders) + 1}", "title": body["title"]}
        self.folders[folder["uid"]] = folder
        return FakeResponse(200, json=folder)

    def _save(self, request):
        body = request.json
        dash = body["dashboard"]
        old = self.dashboards.get(dash["uid"])
        if old and not body.get("overwrite"):
            return FakeResponse(412, json={"message": "The dashboard has been changed by someone else",
                                           "status": "version-mismatch"})
        version = old["version"] + 1 if old else 1
        self.dashboards[dash["uid"]] = {"version": version, "folderUid": body["folderUid"], "dashboard": dash}
        return FakeResponse(200, json={"id": next(self.ids), "uid": dash["uid"], "status": "success",
                                       "url": f"/d/{dash['uid']}/x", "version": version})

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc):
        self.server.stop()


@pytest.fixture
def grafana():
    with FakeGrafana() as fake:
        yield fake


def test_push_creates_folder_and_dashboards_then_updates_idempotently(grafana, capsys):
    assert main(["dashboards", "push", "--url", grafana.server.url, "--token", GOOD, "--folder", "LLM cost"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["created"] * 3
    assert [f["title"] for f in grafana.folders.values()] == ["LLM cost"]
    assert set(grafana.dashboards) == {build.UID_OVERVIEW, build.UID_OWNER, build.UID_EXPENSIVE}
    folder_uid = next(iter(grafana.folders))
    assert {d["folderUid"] for d in grafana.dashboards.values()} == {folder_uid}
    generated = {json.loads(t)["uid"]: json.loads(t) for t in build.generate().values()}
    for uid, saved in grafana.dashboards.items():
        assert {**saved["dashboard"], "id": None} == {**generated[uid], "id": None}

    # again: same folder reused, same dashboards overwritten by uid, nothing duplicated
    assert main(["dashboards", "push", "--url", grafana.server.url + "/", "--token", GOOD, "--folder", "LLM cost"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["updated"] * 3
    assert len(grafana.folders) == 1 and len(grafana.dashboards) == 3
    assert {d["version"] for d in grafana.dashboards.values()} == {2}


def test_push_retargets_data_source_uids(grafana):
    assert main(["dashboards", "push", "--url", grafana.server.url, "--token", GOOD,
                 "--prometheus-uid", "prom-main", "--tempo-uid", "tempo-main"]) == 0
    text = json.dumps([d["dashboard"] for d in grafana.dashboards.values()])
    assert build.PROMETHEUS.uid not in text and build.TEMPO.uid not in text
    assert '"uid": "prom-main"' in text and '"uid": "tempo-main"' in text


@pytest.mark.parametrize("args,expected", [
    (["--token", "glsa_wrong"], "rejected the token (401)"),
    (["--token", READ_ONLY], "403 forbidden"),
    (["--token", "   "], "--token is empty"),
])
def test_push_errors_are_one_clear_line(grafana, capsys, args, expected):
    assert main(["dashboards", "push", "--url", grafana.server.url, *args]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1, err
    assert grafana.dashboards == {}


def test_push_bad_url(capsys, grafana):
    assert main(["dashboards", "push", "--url", "grafana.example.com", "--token", GOOD]) == 2
    assert "is not a Grafana URL" in capsys.readouterr().err
    # a URL where nothing listens (the fake, stopped)
    url = grafana.server.url
    grafana.server.stop()
    assert main(["dashboards", "push", "--url", url, "--token", GOOD]) == 2
    err = capsys.readouterr().err
    assert "cannot reach Grafana" in err and "connection refused" in err and len(err.strip().splitlines()) == 1


def test_push_to_a_path_that_is_not_grafana(capsys):
    with FakeProviderServer() as other:  # answers 404 everywhere
        assert main(["dashboards", "push", "--url", other.url, "--token", GOOD]) == 2
    err = capsys.readouterr().err
    assert "404" in err and "base URL" in err, err


def test_generate_writes_the_committed_files(tmp_path, capsys):
    assert main(["dashboards", "generate", "--out", str(tmp_path)]) == 0
    for path in build.JSON_DIR.glob("*.json"):
        assert (tmp_path / path.name).read_text() == path.read_text()
