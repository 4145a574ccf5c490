"""A small in-memory server on 127.0.0.1 that speaks enough of the Hugging Face Hub's HTTP API for
`Dataset.push_to_hub`, `HfApi.upload_file` and `load_dataset(repo)` (with `HF_HUB_DISABLE_XET=1`):
repo creation, repo info, tree and paths-info listings, preupload, the LFS batch API (an object the
server already holds gets no upload action, so an interrupted push resumes), LFS uploads, commits
(NDJSON) and file resolution with Range requests. Dataset repos only. Written for ipt_data's tests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

ZERO_SHA = "0" * 40


class Repo:
    def __init__(self, repo_id: str, private: bool):
        self.repo_id, self.private = repo_id, private
        self.files: dict[str, bytes] = {}
        self.lfs: set[str] = set()  # paths stored through LFS
        self.sha = hashlib.sha1(repo_id.encode()).hexdigest()
        self.commits = 0

    def entry(self, path: str) -> dict:
        data = self.files[path]
        out = {"type": "file", "path": path, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
        if path in self.lfs:
            out["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 130}
        return out

    def dirs(self) -> set[str]:
        out = set()
        for path in self.files:
            parts = path.split("/")[:-1]
            out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return out


class HubState:
    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, bytes] = {}  # sha256 -> bytes
        self.lfs_uploads = 0
        self.events: list[tuple] = []  # ("preupload", paths), ("put", sha256), ("commit", repo id), in order
        self.fail_next_commits = 0  # inject failures: the next N commits answer 500
        self.commit_failures: list[int] = []  # inject failures: the next commits answer these statuses, in order
        self.refuse_create: int | None = None  # inject: creating a repo answers this status
        self.authorizations: set[str] = set()  # Authorization headers seen on writes
        self.read_only: set[str] = set()  # Authorization headers refused on writes (403)
        self.lock = threading.Lock()


def _handler(state: HubState):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        # --- helpers ------------------------------------------------------------------------------
        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _send(self, code: int, body: bytes = b"", headers: dict | None = None, ctype="application/json"):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            for k, v in (headers or {}).items():
                self.send_header(k, str(v))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, code: int, obj, headers: dict | None = None, ctype: str = "application/json"):
            self._send(code, json.dumps(obj).encode(), headers, ctype)

        def _missing(self, what: str, code_header: str = "RepoNotFound"):
            self._json(404, {"error": f"{what} not found"}, {"X-Error-Code": code_header, "X-Error-Message": what})

        def _repo(self, repo_id: str) -> Repo | None:
            return state.repos.get(unquote(repo_id))

        def _base(self) -> str:
            return f"http://{self.headers['Host']}"

        # --- routes -----------------------------------------------------------------------------------
        def do_HEAD(self):
            self.do_GET()

        def do_GET(self):
            url = urlparse(self.path)
            path, query = _as_dataset_path(unquote(url.path)), parse_qs(url.query)
            if path == "/api/whoami-v2":
                return self._json(
                    200, {"type": "user", "name": "tester", "orgs": [], "auth": {"accessToken": {"role": "write"}}}
                )
            m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
            if m:
                repo = self._repo(m.group(1))
                if repo is None:
                    return self._missing(m.group(1))
                return self._json(
                    200,
                    {
                        "id": repo.repo_id,
                        "_id": repo.sha[:24],
                        "author": repo.repo_id.split("/")[0],
                        "sha": repo.sha,
                        "private": repo.private,
                        "gated": False,
                        "disabled": False,
                        "downloads": 0,
                        "likes": 0,
                        "tags": [],
                        "lastModified": "2026-01-01T00:00:00.000Z",
                        "createdAt": "2026-01-01T00:00:00.000Z",
                        "cardData": {},
                        "siblings": [{"rfilename": p} for p in sorted(repo.files)],
                    },
                )
            m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path)
            if m:
                repo = self._repo(m.group(1))
                if repo is None:
                    return self._missing(m.group(1))
                prefix = (m.group(3) or "").strip("/")
                recursive = query.get("recursive", ["false"])[0].lower() == "true"
                if prefix and prefix not in repo.dirs():
                    return self._missing(prefix, "EntryNotFound")
                return self._json(200, self._listing(repo, prefix, recursive))
            m = re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if m:
                return self._resolve(m.group(1), m.group(3))
            return self._missing(path, "EntryNotFound")

        def _listing(self, repo: Repo, prefix: str, recursive: bool) -> list[dict]:
            pre = prefix + "/" if prefix else ""
            out = []
            for d in sorted(repo.dirs()):
                rest = d[len(pre) :] if d.startswith(pre) else None
                if rest and (recursive or "/" not in rest):
                    out.append({"type": "directory", "path": d, "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0})
            for p in sorted(repo.files):
                rest = p[len(pre) :] if p.startswith(pre) else None
                if rest and (recursive or "/" not in rest):
                    out.append(repo.entry(p))
            return out

        def _resolve(self, repo_id: str, file_path: str):
            repo = self._repo(repo_id)
            if repo is None:
                return self._missing(repo_id)
            if file_path not in repo.files:
                return self._missing(file_path, "EntryNotFound")
            data = repo.files[file_path]
            entry = repo.entry(file_path)
            etag = entry["lfs"]["oid"] if "lfs" in entry else entry["oid"]
            headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
            if "lfs" in entry:
                headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": len(data)})
            rng = self.headers.get("Range")
            if rng and self.command == "GET":
                m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
                start = int(m.group(1)) if m.group(1) else max(0, len(data) - int(m.group(2)))
                end = int(m.group(2)) if m.group(1) and m.group(2) else len(data) - 1
                end = min(end, len(data) - 1)
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                return self._send(206, data[start : end + 1], headers, "application/octet-stream")
            return self._send(200, data, headers, "application/octet-stream")

        def do_PUT(self):
            m = re.fullmatch(r"/lfs-upload/([0-9a-f]{64})", urlparse(self.path).path)
            if not m:
                return self._missing(self.path, "EntryNotFound")
            data = self._body()
            if hashlib.sha256(data).hexdigest() != m.group(1):
                return self._json(400, {"error": "sha256 mismatch"})
            with state.lock:
                state.blobs[m.group(1)] = data
                state.lfs_uploads += 1
                state.events.append(("put", m.group(1)))
            return self._send(200)

        def do_POST(self):
            url = urlparse(self.path)
            path = _as_dataset_path(unquote(url.path))
            body = self._body()
            state.authorizations.add(self.headers.get("Authorization", ""))
            if self.headers.get("Authorization", "") in state.read_only:
                return self._json(403, {"error": "You don't have the rights to create or write this repo"})
            if path == "/api/validate-yaml":
                return self._json(200, {"errors": [], "warnings": []})
            if path == "/api/repos/create":
                req = json.loads(body)
                repo_id = f"{req.get('organization') or 'tester'}/{req['name']}"
                if req.get("type") not in (None, "dataset", "model"):
                    return self._json(400, {"error": "this server holds dataset and model repos only"})
                if state.refuse_create is not None and repo_id not in state.repos:
                    return self._json(state.refuse_create, {"error": "You have reached the maximum number of repos"})
                with state.lock:
                    if repo_id in state.repos:
                        return self._json(
                            409,
                            {
                                "error": "You already created this dataset repo",
                                "url": f"{self._base()}/datasets/{repo_id}",
                            },
                        )
                    private = req.get("visibility") == "private" or bool(req.get("private"))
                    state.repos[repo_id] = Repo(repo_id, private)
                return self._json(200, {"url": f"{self._base()}/datasets/{repo_id}", "name": repo_id})
            m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/preupload/([^/]+)", path)
            if m:
                if self._repo(m.group(1)) is None:
                    return self._missing(m.group(1))
                files = json.loads(body)["files"]
                with state.lock:
                    state.events.append(("preupload", tuple(f["path"] for f in files)))
                return self._json(
                    200,
                    {
                        "files": [
                            {
                                "path": f["path"],
                                "uploadMode": "lfs"
                                if f["path"].endswith(".parquet") or f["size"] > 10_000
                                else "regular",
                                "shouldIgnore": False,
                            }
                            for f in files
                        ]
                    },
                )
            m = re.fullmatch(r"/datasets/([^/]+/[^/]+)\.git/info/lfs/objects/batch", path)
            if m:
                req = json.loads(body)
                objects = []
                for obj in req["objects"]:
                    entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
                    if obj["oid"] not in state.blobs:  # held already: no action, the client skips it
                        entry["actions"] = {
                            "upload": {"href": f"{self._base()}/lfs-upload/{obj['oid']}", "expires_in": 3600}
                        }
                    objects.append(entry)
                return self._json(
                    200,
                    {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                    ctype="application/vnd.git-lfs+json",
                )
            m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/paths-info/([^/]+)", path)
            if m:
                repo = self._repo(m.group(1))
                if repo is None:
                    return self._missing(m.group(1))
                ctype = self.headers.get("Content-Type", "")
                if "json" in ctype:
                    paths = json.loads(body).get("paths", [])
                else:
                    paths = parse_qs(body.decode()).get("paths", [])
                out = []
                for p in paths:
                    p = p.strip("/")
                    if p in repo.files:
                        out.append(repo.entry(p))
                    elif p in repo.dirs():
                        out.append(
                            {"type": "directory", "path": p, "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0}
                        )
                return self._json(200, out)
            m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/commit/([^/]+)", path)
            if m:
                return self._commit(m.group(1), body)
            return self._missing(path, "EntryNotFound")

        def _commit(self, repo_id: str, body: bytes):
            repo = self._repo(repo_id)
            if repo is None:
                return self._missing(repo_id)
            with state.lock:
                if state.commit_failures:
                    return self._json(state.commit_failures.pop(0), {"error": "injected failure"})
                if state.fail_next_commits > 0:
                    state.fail_next_commits -= 1
                    return self._json(500, {"error": "injected failure"})
                state.events.append(("commit", repo_id))
                for line in body.decode().splitlines():
                    if not line.strip():
                        continue
                    item = json.loads(line)
                    key, value = item["key"], item["value"]
                    if key == "file":
                        repo.files[value["path"]] = base64.b64decode(value["content"])
                        repo.lfs.discard(value["path"])
                    elif key == "lfsFile":
                        if value["oid"] not in state.blobs:
                            return self._json(422, {"error": f"LFS object {value['oid']} was never uploaded"})
                        repo.files[value["path"]] = state.blobs[value["oid"]]
                        repo.lfs.add(value["path"])
                    elif key == "deletedFile":
                        repo.files.pop(value["path"], None)
                    elif key == "deletedFolder":
                        for p in [p for p in repo.files if p.startswith(value["path"].rstrip("/") + "/")]:
                            repo.files.pop(p)
                repo.commits += 1
                repo.sha = hashlib.sha1(f"{repo.repo_id}:{repo.commits}".encode()).hexdigest()
            return self._json(
                200,
                {
                    "commitUrl": f"{self._base()}/datasets/{repo_id}/commit/{repo.sha}",
                    "commitOid": repo.sha,
                    "pullRequestUrl": None,
                },
            )

    return Handler


def _as_dataset_path(path: str) -> str:
    """Model repos are served like dataset repos (one namespace: tests name them apart): `/api/models/...`,
    `/<repo>.git/info/lfs/...` and `/<repo>/resolve/...` are routed to the dataset routes."""
    if path.startswith("/api/models/"):
        return "/api/datasets/" + path[len("/api/models/") :]
    if not path.startswith(("/api/", "/datasets/", "/lfs-upload/")) and re.fullmatch(
        r"/[^/]+/[^/]+(\.git/info/lfs/objects/batch|/resolve/.+)", path
    ):
        return "/datasets" + path
    return path


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # a real server's backlog; socketserver's 5 resets connections under a burst


class LocalHub:
    """`with LocalHub() as hub:` serves on `hub.url` (127.0.0.1, a free port) in a thread."""

    def __init__(self):
        self.state = HubState()
        self.server = _Server(("127.0.0.1", 0), _handler(self.state))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LocalHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
