"""A small Hugging Face Hub-compatible HTTP server for tests: the real ``huggingface_hub`` client talks to it.

It implements the endpoints the client calls to create a repo, upload (preupload, LFS batch, single-part PUT,
verify, NDJSON commit), list (tree, paths-info, refs, commits), describe (model info, whoami), validate card
metadata and download (``resolve``, with a CDN-style 302 for LFS files). Storage is honest: what is received is
stored content-addressed and served back byte for byte; regular files are git blobs (``oid`` = git blob sha1),
LFS files are stored under their real sha256 with a git-lfs pointer in the tree; every commit has its own tree,
branches and ``refs/pr/N`` point at commits, so any revision (branch, PR ref or commit sha) can be read back.

Two host names reach the same port: the API answers on ``api_url`` (127.0.0.1) and the LFS "CDN" on ``cdn_url``
(localhost). The client treats a redirect to another host as a CDN redirect: it reads the file's metadata from the
302 itself and does not forward the token, as with the real Hub.

    with HubServer() as hub:
        HfApi(endpoint=hub.api_url, token=hub.token).create_repo("org/model")
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub stores files of 10 MB and more in LFS, whatever their name
# The .gitattributes the Hub writes into a new model repo (the LFS part that matters here).
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in ("*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib",
                    "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
                    "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "*.tar", "*.tflite", "*.tgz",
                    "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*")
)
# Subsets of the Hub's own lists, enough to reject typos the way the Hub's card validation does.
KNOWN_LICENSES = {
    "apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0",
    "cc-by-nc-sa-4.0", "cc0-1.0", "gpl-3.0", "lgpl-3.0", "agpl-3.0", "openrail", "creativeml-openrail-m",
    "llama2", "llama3", "gemma", "unknown", "other",
}
KNOWN_PIPELINE_TAGS = {
    "automatic-speech-recognition", "audio-classification", "text-to-speech", "text-generation",
    "text-classification", "token-classification", "translation", "summarization", "feature-extraction",
    "image-classification", "object-detection", "fill-mask", "question-answering", "sentence-similarity",
}
LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
SHA1 = re.compile(r"^[0-9a-f]{40}$")


def git_blob_sha1(data: bytes) -> str:
    """The id git gives a blob: sha1 of ``blob <size>\\0<content>``."""
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file committed in place of a large file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Entry:
    """One file in a commit's tree: its git blob id and size, and for LFS files the content's sha256."""

    oid: str
    size: int
    lfs_sha256: str | None = None
    pointer_size: int | None = None

    def as_json(self, path: str) -> dict:
        info: dict[str, Any] = {"type": "file", "oid": self.oid, "size": self.size, "path": path}
        if self.lfs_sha256 is not None:
            info["lfs"] = {"oid": self.lfs_sha256, "size": self.size, "pointerSize": self.pointer_size}
        return info

    @property
    def content_oid(self) -> str:
        """What ``preupload`` reports and the client compares: sha256 for LFS files, the git blob id otherwise."""
        return self.lfs_sha256 or self.oid


@dataclass
class Commit:
    oid: str
    tree: dict[str, Entry]
    parent: str | None
    title: str
    message: str
    author: str
    date: str


@dataclass
class Repo:
    repo_id: str
    private: bool
    owner: str
    created: str
    refs: dict[str, str] = field(default_factory=dict)  # "refs/heads/main" / "refs/pr/1" -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)
    pull_requests: int = 0


class HttpError(Exception):
    """An error answer: status, JSON body ``{"error": message}`` and the Hub's ``X-Error-*`` headers."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class HubState:
    """Repos, blobs and LFS objects, behind one lock (the server handles requests in threads)."""

    def __init__(self, users: dict[str, str]):
        self.lock = threading.RLock()
        self.users = users  # token -> user name
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, bytes] = {}  # git blob sha1 -> content (regular files and LFS pointers)
        self.lfs: dict[str, bytes] = {}  # sha256 -> content
        self.upload_tickets: dict[str, str] = {}  # ticket -> sha256 it may upload (a presigned URL, in effect)

    # --- commits ---------------------------------------------------------------------------------------

    def commit(self, repo: Repo, ref: str, tree: dict[str, Entry], title: str, message: str, author: str,
               parent: str | None) -> Commit:
        """Store a commit whose id hashes its tree, parent, message, author and time (as git does)."""
        tree_id = hashlib.sha1(
            "".join(f"{path}\0{entry.oid}\n" for path, entry in sorted(tree.items())).encode()
        ).hexdigest()
        date = _now()
        oid = hashlib.sha1(f"tree {tree_id}\nparent {parent}\nauthor {author} {date}\n\n{title}\n\n{message}".encode()
                           ).hexdigest()
        commit = Commit(oid, dict(tree), parent, title, message, author, date)
        repo.commits[oid] = commit
        repo.refs[ref] = oid
        return commit

    def add_blob(self, data: bytes) -> Entry:
        oid = git_blob_sha1(data)
        self.blobs[oid] = data
        return Entry(oid, len(data))

    def add_lfs_entry(self, sha256: str) -> Entry:
        data = self.lfs[sha256]
        pointer = lfs_pointer(sha256, len(data))
        oid = git_blob_sha1(pointer)
        self.blobs[oid] = pointer
        return Entry(oid, len(data), sha256, len(pointer))

    def read(self, entry: Entry) -> bytes:
        return self.lfs[entry.lfs_sha256] if entry.lfs_sha256 else self.blobs[entry.oid]

    @staticmethod
    def resolve(repo: Repo, revision: str) -> Commit:
        """A branch name, a full ref (``refs/pr/1``) or a commit oid -> the commit; 404 RevisionNotFound otherwise."""
        for ref in (revision, f"refs/heads/{revision}"):
            if ref in repo.refs:
                return repo.commits[repo.refs[ref]]
        if revision in repo.commits:
            return repo.commits[revision]
        raise HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


class HubServer:
    """Run the Hub-compatible server on a free port of 127.0.0.1 in a background thread.

    ``requests`` records ``(method, host, path)`` of every request; ``fail(route, status)`` makes the next
    request(s) to a route (``"commit"``, ``"preupload"``, ``"lfs-batch"``, ``"resolve"``, ...) answer ``status``.
    """

    def __init__(self, users: dict[str, str] | None = None):
        self.token = "hf_test_" + secrets.token_hex(8)
        self.user = "tester"
        self.state = HubState(users if users is not None else {self.token: self.user})
        self.requests: list[tuple[str, str, str]] = []
        self._failures: dict[str, list[int]] = {}
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.hub = self  # type: ignore[attr-defined]
        port = self._httpd.server_address[1]
        self.api_url = f"http://127.0.0.1:{port}"
        self.cdn_url = f"http://localhost:{port}"
        self._thread: threading.Thread | None = None

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def fail(self, route: str, status: int = 500, times: int = 1) -> None:
        """Answer the next ``times`` requests to ``route`` with ``status`` (a server error mid-upload)."""
        self._failures.setdefault(route, []).extend([status] * times)

    def take_failure(self, route: str) -> int | None:
        with self.state.lock:
            pending = self._failures.get(route)
            return pending.pop(0) if pending else None

    # --- inspection helpers for tests ------------------------------------------------------------------

    def repo(self, repo_id: str) -> Repo:
        return self.state.repos[repo_id]

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of ``repo_id`` at ``revision``, as stored."""
        with self.state.lock:
            commit = self.state.resolve(self.repo(repo_id), revision)
            return {path: self.state.read(entry) for path, entry in commit.tree.items()}

    def commit_count(self, repo_id: str) -> int:
        return len(self.repo(repo_id).commits)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    server_version = "LocalHub/1.0"

    # --- plumbing ------------------------------------------------------------------------------------------

    @property
    def hub(self) -> HubServer:
        return self.server.hub  # type: ignore[attr-defined]

    def log_message(self, format: str, *args) -> None:
        pass  # quiet: tests read hub.requests instead

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        self.query = parse_qs(parts.query)
        host = self.headers.get("Host", "")
        self.hub.requests.append((method, host, parts.path))
        try:
            body = self._read_body()
            route, handler, args = self._route(method, parts.path)
            status = self.hub.take_failure(route)
            if status is not None:
                raise HttpError(status, f"Injected failure of the {route} endpoint")
            handler(body, *args)
        except HttpError as err:
            headers = dict(err.headers)
            if err.code:
                headers["X-Error-Code"] = err.code
            headers["X-Error-Message"] = err.message
            self._send_json(err.status, {"error": err.message}, headers)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/octet-stream") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None,
                   content_type: str = "application/json") -> None:
        self._send(status, json.dumps(payload).encode(), headers, content_type)

    def _route(self, method: str, path: str):
        """Map a request to ``(route name, handler, args)``; 404 for anything the Hub client should not call."""
        segments = [unquote(s) for s in path.strip("/").split("/")]
        if method == "GET" and path == "/api/whoami-v2":
            return "whoami", self.whoami, ()
        if method == "POST" and path == "/api/repos/create":
            return "create", self.create_repo, ()
        if method == "POST" and path == "/api/validate-yaml":
            return "validate-yaml", self.validate_yaml, ()
        if segments[:2] == ["api", "models"] and len(segments) >= 4:
            repo_id, rest = "/".join(segments[2:4]), segments[4:]
            if not rest and method == "GET":
                return "info", self.model_info, (repo_id, "main")
            action, revision, tail = rest[0], "/".join(rest[1:2]), rest[2:]
            routes = {
                ("GET", "revision"): self.model_info, ("GET", "tree"): self.tree,
                ("POST", "paths-info"): self.paths_info, ("POST", "preupload"): self.preupload,
                ("POST", "commit"): self.commit, ("POST", "branch"): self.create_branch,
                ("GET", "commits"): self.list_commits,
            }
            if (method, action) == ("GET", "refs"):
                return "refs", self.refs, (repo_id,)
            if (method, action) in routes and revision:
                return action, routes[(method, action)], (repo_id, revision, "/".join(tail))
        if segments[:2] == ["cdn", "upload"] and method == "PUT" and len(segments) == 3:
            return "lfs-upload", self.lfs_upload, (segments[2],)
        if segments[:2] == ["cdn", "lfs"] and method in ("GET", "HEAD") and len(segments) == 3:
            return "cdn", self.cdn_download, (segments[2],)
        if len(segments) >= 5 and segments[1].endswith(".git") and segments[2:4] == ["info", "lfs"]:
            repo_id = f"{segments[0]}/{segments[1][:-4]}"
            if segments[4:] == ["objects", "batch"] and method == "POST":
                return "lfs-batch", self.lfs_batch, (repo_id,)
            if segments[4:] == ["objects", "verify"] and method == "POST":
                return "lfs-verify", self.lfs_verify, (repo_id,)
        if len(segments) >= 5 and segments[2] == "resolve" and method in ("GET", "HEAD"):
            return "resolve", self.resolve, ("/".join(segments[:2]), segments[3], "/".join(segments[4:]))
        raise HttpError(404, f"No route for {method} {path}")

    # --- auth and lookups ----------------------------------------------------------------------------

    def _user(self, required: bool) -> str | None:
        header = self.headers.get("Authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else None
        user = self.hub.state.users.get(token) if token else None
        if token and user is None:
            raise HttpError(401, "Invalid credentials in Authorization header")
        if required and user is None:
            raise HttpError(401, "You must be authenticated to access this endpoint", "RepoNotFound")
        return user

    def _repo(self, repo_id: str, write: bool = False) -> Repo:
        user = self._user(required=write)
        repo = self.hub.state.repos.get(repo_id)
        # A private repo is indistinguishable from a missing one to anyone but its owner (as on the Hub).
        if repo is None or (repo.private and user != repo.owner):
            raise HttpError(401 if user is None else 404, "Repository not found", "RepoNotFound")
        if write and user != repo.owner:
            raise HttpError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    def _json(self, body: bytes) -> Any:
        try:
            return json.loads(body or b"{}")
        except json.JSONDecodeError as err:
            raise HttpError(400, f"Invalid JSON body: {err}") from err

    # --- account, repos, card validation -----------------------------------------------------------

    def whoami(self, body: bytes) -> None:
        user = self._user(required=False)
        if user is None:
            raise HttpError(401, "Invalid credentials in Authorization header")
        token = {"displayName": "test", "role": "write"}
        self._send_json(200, {"type": "user", "name": user, "orgs": [],
                              "auth": {"type": "access_token", "accessToken": token}})

    def create_repo(self, body: bytes) -> None:
        user = self._user(required=True)
        payload = self._json(body)
        name, organization = payload.get("name"), payload.get("organization")
        repo_id = f"{organization or user}/{name}"
        if payload.get("type", "model") != "model":
            raise HttpError(400, "This test Hub only hosts model repos")
        if not isinstance(name, str) or not REPO_ID.fullmatch(repo_id):
            raise HttpError(400, f"Invalid repo name: {repo_id!r}")
        url = f"{self.hub.api_url}/{repo_id}"
        state = self.hub.state
        with state.lock:
            if repo_id in state.repos:
                self._send_json(409, {"error": "You already created this model repo", "url": url})
                return
            repo = Repo(repo_id, payload.get("visibility") == "private" or bool(payload.get("private")), user, _now())
            state.repos[repo_id] = repo
            # Like the Hub, a new repo starts with one commit holding .gitattributes.
            entry = state.add_blob(DEFAULT_GITATTRIBUTES.encode())
            state.commit(repo, "refs/heads/main", {".gitattributes": entry}, "initial commit", "", user, None)
        self._send_json(200, {"url": url, "name": repo_id, "id": repo_id})

    def validate_yaml(self, body: bytes) -> None:
        payload = self._json(body)
        errors, warnings = validate_card_metadata(payload.get("content", ""))
        self._send_json(400 if errors else 200, {"errors": [{"message": e} for e in errors],
                                                 "warnings": [{"message": w} for w in warnings]})

    # --- reading ----------------------------------------------------------------------------------------

    def model_info(self, body: bytes, repo_id: str, revision: str, _tail: str = "") -> None:
        state = self.hub.state
        with state.lock:
            repo = self._repo(repo_id)
            commit = state.resolve(repo, revision)
            card = {}
            if "README.md" in commit.tree:
                card = parse_front_matter(state.read(commit.tree["README.md"]).decode("utf-8", "replace"))[0] or {}
            info = {
                "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "modelId": repo_id,
                "author": repo.owner, "sha": commit.oid, "private": repo.private, "gated": False, "disabled": False,
                "createdAt": repo.created, "lastModified": commit.date, "downloads": 0, "likes": 0,
                "library_name": card.get("library_name"), "pipeline_tag": card.get("pipeline_tag"),
                "tags": card.get("tags", []), "cardData": card or None,
                "siblings": [{"rfilename": path} for path in sorted(commit.tree)],
            }
        self._send_json(200, info)

    def tree(self, body: bytes, repo_id: str, revision: str, path: str) -> None:
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        state = self.hub.state
        with state.lock:
            commit = state.resolve(self._repo(repo_id), revision)
            prefix = f"{path.strip('/')}/" if path.strip("/") else ""
            if prefix and not any(p.startswith(prefix) for p in commit.tree):
                raise HttpError(404, f"Path {path} not found", "EntryNotFound")
            entries: dict[str, dict] = {}
            for file_path, entry in sorted(commit.tree.items()):
                if not file_path.startswith(prefix):
                    continue
                rest = file_path[len(prefix):].split("/")
                # Folders are listed as such; a non-recursive listing stops at the first level.
                for depth in range(1, len(rest)):
                    folder = prefix + "/".join(rest[:depth])
                    if recursive or depth == 1:
                        entries.setdefault(folder, _folder_json(folder, commit.tree))
                    if not recursive:
                        break
                if recursive or len(rest) == 1:
                    entries[file_path] = entry.as_json(file_path)
        self._send_json(200, list(entries.values()))

    def paths_info(self, body: bytes, repo_id: str, revision: str, _tail: str) -> None:
        form = parse_qs(body.decode())
        state = self.hub.state
        with state.lock:
            commit = state.resolve(self._repo(repo_id), revision)
            found = []
            for path in form.get("paths", []):
                path = path.strip("/")
                if path in commit.tree:
                    found.append(commit.tree[path].as_json(path))
                elif any(p.startswith(path + "/") for p in commit.tree):
                    found.append(_folder_json(path, commit.tree))
        self._send_json(200, found)

    def refs(self, body: bytes, repo_id: str) -> None:
        with self.hub.state.lock:
            repo = self._repo(repo_id)

            def ref_json(ref: str) -> dict:
                return {"name": ref.removeprefix("refs/heads/"), "ref": ref, "targetCommit": repo.refs[ref]}

            payload = {
                "branches": [ref_json(r) for r in sorted(repo.refs) if r.startswith("refs/heads/")],
                "converts": [], "tags": [],
            }
            if self.query.get("include_prs"):
                payload["pullRequests"] = [ref_json(r) for r in sorted(repo.refs) if r.startswith("refs/pr/")]
        self._send_json(200, payload)

    def list_commits(self, body: bytes, repo_id: str, revision: str, _tail: str) -> None:
        with self.hub.state.lock:
            repo = self._repo(repo_id)
            commit: Commit | None = self.hub.state.resolve(repo, revision)
            history = []
            while commit is not None:
                history.append({"id": commit.oid, "title": commit.title, "message": commit.message,
                                "authors": [{"user": commit.author}], "date": commit.date})
                commit = repo.commits.get(commit.parent) if commit.parent else None
        self._send_json(200, history)

    def resolve(self, body: bytes, repo_id: str, revision: str, path: str) -> None:
        state = self.hub.state
        with state.lock:
            commit = state.resolve(self._repo(repo_id), revision)
            entry = commit.tree.get(path)
            if entry is None:
                raise HttpError(404, f"{path} does not exist at {revision}", "EntryNotFound",
                                {"X-Repo-Commit": commit.oid})
            headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{entry.oid}"', "Accept-Ranges": "bytes"}
            if entry.lfs_sha256:
                # Large files live on the CDN: the 302 itself carries the file's metadata.
                headers.update({"Location": f"{self.hub.cdn_url}/cdn/lfs/{entry.lfs_sha256}",
                                "X-Linked-Etag": f'"{entry.lfs_sha256}"', "X-Linked-Size": str(entry.size)})
                self._send(302, b"", headers)
                return
            data = state.read(entry)
        self._send_range(data, headers)

    def cdn_download(self, body: bytes, sha256: str) -> None:
        data = self.hub.state.lfs.get(sha256)
        if data is None:
            raise HttpError(404, f"No such object: {sha256}")
        self._send_range(data, {"ETag": f'"{sha256}"', "Accept-Ranges": "bytes"})

    def _send_range(self, data: bytes, headers: dict[str, str]) -> None:
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match is None:
            self._send(200, data, headers)
            return
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) else len(data) - 1
        if start >= len(data):
            raise HttpError(416, "Range not satisfiable", headers={"Content-Range": f"bytes */{len(data)}"})
        headers = {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"}
        self._send(206, data[start:end + 1], headers)

    # --- writing ----------------------------------------------------------------------------------------

    def create_branch(self, body: bytes, repo_id: str, branch: str, _tail: str) -> None:
        payload = self._json(body)
        state = self.hub.state
        with state.lock:
            repo = self._repo(repo_id, write=True)
            ref = f"refs/heads/{branch}"
            if branch.startswith("refs/") or not re.fullmatch(r"[A-Za-z0-9._/-]+", branch):
                raise HttpError(400, f"Invalid branch name: {branch}")
            if ref in repo.refs:
                raise HttpError(409, f"Branch {branch} already exists")
            repo.refs[ref] = state.resolve(repo, payload.get("startingPoint") or "main").oid
        self._send_json(200, {})

    def preupload(self, body: bytes, repo_id: str, revision: str, _tail: str) -> None:
        payload = self._json(body)
        state = self.hub.state
        with state.lock:
            commit = state.resolve(self._repo(repo_id, write=True), revision)
            patterns = lfs_patterns(state.read(commit.tree[".gitattributes"]).decode()) \
                if ".gitattributes" in commit.tree else []
            answers = []
            for item in payload.get("files", []):
                path, size = item["path"], int(item["size"])
                sample = base64.b64decode(item.get("sample", ""))
                existing = commit.tree.get(path)
                answers.append({
                    "path": path,
                    "uploadMode": "lfs" if _is_lfs(path, size, sample, patterns) else "regular",
                    "shouldIgnore": False,
                    "oid": existing.content_oid if existing else None,
                })
        self._send_json(200, {"files": answers, "commitOid": commit.oid})

    def lfs_batch(self, body: bytes, repo_id: str) -> None:
        payload = self._json(body)
        state = self.hub.state
        with state.lock:
            self._repo(repo_id, write=True)
            if payload.get("operation") != "upload":
                raise HttpError(400, "Only the upload operation is implemented")
            objects = []
            for obj in payload.get("objects", []):
                oid, size = obj["oid"], int(obj["size"])
                answer = {"oid": oid, "size": size, "authenticated": True}
                if oid not in state.lfs:  # already stored objects get no actions: nothing to upload
                    ticket = secrets.token_hex(16)
                    state.upload_tickets[ticket] = oid
                    answer["actions"] = {
                        "upload": {"href": f"{self.hub.cdn_url}/cdn/upload/{oid}?size={size}&ticket={ticket}"},
                        "verify": {"href": f"{self.hub.api_url}/{quote(repo_id)}.git/info/lfs/objects/verify"},
                    }
                objects.append(answer)
        self._send_json(200, {"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json")

    def lfs_upload(self, body: bytes, sha256: str) -> None:
        ticket = self.query.get("ticket", [""])[0]
        size = int(self.query.get("size", ["-1"])[0])
        state = self.hub.state
        with state.lock:
            if state.upload_tickets.get(ticket) != sha256:
                raise HttpError(403, "Upload URL is not valid for this object")
        if hashlib.sha256(body).hexdigest() != sha256 or len(body) != size:
            raise HttpError(400, f"Uploaded content does not match sha256 {sha256} and size {size}")
        with state.lock:
            state.lfs[sha256] = body
            state.upload_tickets.pop(ticket, None)
        self._send(200, b"", {"ETag": f'"{hashlib.md5(body).hexdigest()}"'})

    def lfs_verify(self, body: bytes, repo_id: str) -> None:
        payload = self._json(body)
        self._repo(repo_id, write=True)
        data = self.hub.state.lfs.get(payload.get("oid", ""))
        if data is None or len(data) != payload.get("size"):
            raise HttpError(404, f"Object {payload.get('oid')} was not uploaded")
        self._send_json(200, {"success": True})

    def commit(self, body: bytes, repo_id: str, revision: str, _tail: str) -> None:
        if "ndjson" not in self.headers.get("Content-Type", ""):
            raise HttpError(400, "The commit endpoint takes application/x-ndjson")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HttpError(400, "The first NDJSON line must be the commit header")
        header = lines[0]["value"]
        create_pr = self.query.get("create_pr", ["0"])[0] in ("1", "true")
        state = self.hub.state
        with state.lock:
            user = self._user(required=True)
            repo = self._repo(repo_id, write=True)
            base = state.resolve(repo, revision)
            if header.get("parentCommit") and header["parentCommit"] != base.oid:
                raise HttpError(412, "A commit has happened since. Please refresh and try again.")
            tree = dict(base.tree)
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value", {})
                path = value.get("path", "").strip("/")
                if key == "file":
                    tree[path] = state.add_blob(base64.b64decode(value["content"]))
                elif key == "lfsFile":
                    if value.get("algo", "sha256") != "sha256" or value.get("oid") not in state.lfs:
                        raise HttpError(422, f"LFS object {value.get('oid')} for {path} was never uploaded")
                    if "size" in value and value["size"] != len(state.lfs[value["oid"]]):
                        raise HttpError(422, f"LFS object size mismatch for {path}")
                    tree[path] = state.add_lfs_entry(value["oid"])
                elif key == "deletedFile":
                    if tree.pop(path, None) is None:
                        raise HttpError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                elif key == "deletedFolder":
                    doomed = [p for p in tree if p.startswith(path + "/")]
                    if not doomed:
                        raise HttpError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in doomed:
                        del tree[p]
                else:
                    raise HttpError(400, f"Unknown commit operation {key!r}")
            if create_pr:
                repo.pull_requests += 1
                ref = f"refs/pr/{repo.pull_requests}"
            else:
                ref = next((r for r in (revision, f"refs/heads/{revision}") if r in repo.refs), None)
                if ref is None:
                    raise HttpError(400, f"Cannot commit to {revision}: not a branch or PR ref")
            new = state.commit(repo, ref, tree, header.get("summary", ""), header.get("description", ""), user,
                               base.oid)
        pr_url = f"{self.hub.api_url}/{repo_id}/discussions/{repo.pull_requests}" if create_pr else None
        self._send_json(200, {"success": True, "commitOid": new.oid, "hookOutput": "",
                              "commitUrl": f"{self.hub.api_url}/{repo_id}/commit/{new.oid}",
                              "pullRequestUrl": pr_url})


def _folder_json(path: str, tree: dict[str, Entry]) -> dict:
    inside = sorted(f"{p}\0{e.oid}" for p, e in tree.items() if p.startswith(path + "/"))
    return {"type": "directory", "oid": hashlib.sha1("\n".join(inside).encode()).hexdigest(), "size": 0, "path": path}


def lfs_patterns(gitattributes: str) -> list[str]:
    """Patterns marked ``filter=lfs`` in a ``.gitattributes`` file."""
    return [line.split()[0] for line in gitattributes.splitlines()
            if line.strip() and not line.startswith("#") and "filter=lfs" in line]


def _is_lfs(path: str, size: int, sample: bytes, patterns: list[str]) -> bool:
    """The Hub's rule: large files, files matching an LFS pattern and binary files go to LFS."""
    name = path.rsplit("/", 1)[-1]
    if size >= LFS_THRESHOLD or any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(path, p) for p in patterns):
        return True
    return b"\x00" in sample


def parse_front_matter(content: str) -> tuple[dict | None, str | None]:
    """The YAML block between the leading ``---`` lines: ``(metadata, None)`` or ``(None, error message)``."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.DOTALL)
    if match is None:
        return None, None
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError as err:
        return None, f"Invalid YAML in the metadata block: {err}"
    if data is not None and not isinstance(data, dict):
        return None, "The metadata block must be a YAML mapping"
    return data or {}, None


def validate_card_metadata(content: str) -> tuple[list[str], list[str]]:
    """Errors and warnings for a model card's metadata, following the Hub's model card spec."""
    metadata, error = parse_front_matter(content)
    if error:
        return [error], []
    if not metadata:
        return [], ["Empty or missing yaml metadata in repo card"]
    errors: list[str] = []

    def strings(key: str) -> list[str]:
        value = metadata.get(key)
        if value is None:
            return []
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) and v for v in items):
            errors.append(f'"{key}" must be a string or a list of strings')
            return []
        return items

    if "license" in metadata and metadata["license"] not in KNOWN_LICENSES:
        errors.append(f'"license" must be one of the Hub\'s license identifiers, got {metadata["license"]!r}')
    if "pipeline_tag" in metadata and metadata["pipeline_tag"] not in KNOWN_PIPELINE_TAGS:
        errors.append(f'"pipeline_tag" {metadata["pipeline_tag"]!r} is not a known task')
    if "library_name" in metadata and not isinstance(metadata["library_name"], str):
        errors.append('"library_name" must be a string')
    for code in strings("language"):
        if not LANGUAGE_CODE.fullmatch(code):
            errors.append(f'"language" entry {code!r} is not an ISO 639 code')
    strings("tags")
    strings("datasets")
    for model in strings("base_model"):
        if not REPO_ID.fullmatch(model):
            errors.append(f'"base_model" entry {model!r} is not a model id (namespace/name)')
    if "model-index" in metadata:
        errors.extend(_model_index_errors(metadata["model-index"]))
    return errors, []


def _model_index_errors(index: Any) -> list[str]:
    if not isinstance(index, list) or not index:
        return ['"model-index" must be a non-empty list']
    errors = []
    for i, model in enumerate(index):
        where = f"model-index[{i}]"
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            errors.append(f"{where}.name must be a string")
            continue
        if not isinstance(model.get("results"), list):
            errors.append(f"{where}.results must be a list")
            continue
        for j, result in enumerate(model["results"]):
            at = f"{where}.results[{j}]"
            if not isinstance(result, dict):
                errors.append(f"{at} must be a mapping")
                continue
            if not isinstance((result.get("task") or {}).get("type"), str):
                errors.append(f"{at}.task.type must be a string")
            dataset = result.get("dataset") or {}
            if not isinstance(dataset.get("type"), str) or not isinstance(dataset.get("name"), str):
                errors.append(f"{at}.dataset needs string 'type' and 'name'")
            metrics = result.get("metrics")
            if not isinstance(metrics, list) or not metrics:
                errors.append(f"{at}.metrics must be a non-empty list")
                continue
            for k, metric in enumerate(metrics):
                if not isinstance(metric, dict) or not isinstance(metric.get("type"), str):
                    errors.append(f"{at}.metrics[{k}].type must be a string")
                elif isinstance(metric.get("value"), bool) or not isinstance(metric.get("value"), (int, float, str)):
                    errors.append(f"{at}.metrics[{k}].value must be a number or a string")
    return errors
