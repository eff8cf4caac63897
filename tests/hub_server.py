"""A local stand-in for the Hugging Face Hub: the endpoints huggingface_hub uses to
create a repo, commit files, resolve a revision, list its tree and download files.

Real HTTP (Starlette under uvicorn on 127.0.0.1); commits are kept in memory as
{path: bytes} snapshots, so revisions (branch names and commit ids) resolve as on
the Hub. Errors carry the X-Error-Code header that huggingface_hub maps to its
exception types.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field

import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

PIPELINE_TAGS = ("keypoint-detection", "image-classification", "object-detection", "image-feature-extraction")


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Repo:
    private: bool
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None


class FakeHub:
    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.requests: list[str] = []
        self.base_url = ""

    # --- helpers ---
    def error(self, status: int, code: str | None, message: str) -> JSONResponse:
        headers = {"X-Error-Code": code, "X-Error-Message": message} if code else {"X-Error-Message": message}
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def authorised(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.token}"

    def find(self, request: Request, write: bool = False) -> tuple[str, Repo | None, Response | None]:
        repo_id = f"{request.path_params['namespace']}/{request.path_params['name']}"
        if write and not self.authorised(request):
            return repo_id, None, self.error(401, None, "Invalid credentials in Authorization header")
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not self.authorised(request)):
            return repo_id, None, self.error(404, "RepoNotFound", f"Repository {repo_id} not found")
        return repo_id, repo, None

    def find_commit(self, request: Request, revision: str) -> tuple[str, Repo | None, str | None, Response | None]:
        """(repo id, repo, commit id, error response) for a read at `revision`."""
        repo_id, repo, failure = self.find(request)
        if failure:
            return repo_id, None, None, failure
        sha = repo.resolve(revision)
        if sha is None:
            return repo_id, repo, None, self.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return repo_id, repo, sha, None

    # --- endpoints ---
    async def create_repo(self, request: Request) -> Response:
        if not self.authorised(request):
            return self.error(401, None, "Invalid credentials in Authorization header")
        body = await request.json()
        repo_id = f"{body.get('organization') or 'user'}/{body['name']}"
        url = f"{self.base_url}/{repo_id}"
        if repo_id in self.repos:
            return JSONResponse({"error": "You already created this model repo", "url": url}, status_code=409)
        self.repos[repo_id] = Repo(private=body.get("visibility") == "private" or bool(body.get("private")))
        return JSONResponse({"url": url, "name": repo_id})

    async def validate_yaml(self, request: Request) -> Response:
        """The Hub checks a model card's metadata block before committing it."""
        content = (await request.json())["content"]
        errors = []
        if content.startswith("---\n") and "\n---" in content[4:]:
            try:
                metadata = yaml.safe_load(content[4 : content.index("\n---", 4)])
            except yaml.YAMLError as error:
                metadata, errors = None, [{"message": f"invalid YAML: {error}"}]
            if metadata is not None and not isinstance(metadata, dict):
                errors.append({"message": "metadata must be a mapping"})
            elif metadata and metadata.get("pipeline_tag") not in (None, *PIPELINE_TAGS):
                errors.append({"message": f"unknown pipeline_tag {metadata.get('pipeline_tag')!r}"})
        if errors:
            return JSONResponse({"errors": errors}, status_code=400)
        return JSONResponse({"errors": [], "warnings": []})

    async def preupload(self, request: Request) -> Response:
        repo_id, repo, failure = self.find(request, write=True)
        if failure:
            return failure
        body = await request.json()
        current = repo.commits.get(repo.resolve(request.path_params["revision"]) or "", {})
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                  "oid": git_blob_id(current[f["path"]]) if f["path"] in current else None}
                 for f in body["files"]]
        return JSONResponse({"files": files, "commitOid": repo.resolve(request.path_params["revision"])})

    async def commit(self, request: Request) -> Response:
        repo_id, repo, failure = self.find(request, write=True)
        if failure:
            return failure
        branch = request.path_params["revision"]
        parent = repo.branches.get(branch)
        files = dict(repo.commits.get(parent, {}))
        summary = ""
        for line in (await request.body()).splitlines():
            item = json.loads(line)
            if item["key"] == "header":
                summary = item["value"]["summary"]
            elif item["key"] == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] == "deletedFile":
                files.pop(item["value"]["path"], None)
            else:
                return self.error(400, None, f"unsupported commit operation {item['key']}")
        sha = hashlib.sha1(f"{parent}{summary}{time.time_ns()}".encode() +
                           b"".join(git_blob_id(v).encode() for v in files.values())).hexdigest()
        repo.commits[sha] = files
        repo.branches[branch] = sha
        return JSONResponse({"commitUrl": f"{self.base_url}/{repo_id}/commit/{sha}", "commitOid": sha,
                             "pullRequestUrl": None})

    async def revision_info(self, request: Request) -> Response:
        repo_id, repo, sha, failure = self.find_commit(request, request.path_params["revision"])
        if failure:
            return failure
        return JSONResponse({"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo.private,
                             "siblings": [{"rfilename": path} for path in sorted(repo.commits[sha])],
                             "tags": [], "downloads": 0, "likes": 0})

    async def tree(self, request: Request) -> Response:
        repo_id, repo, sha, failure = self.find_commit(request, request.path_params["revision"])
        if failure:
            return failure
        return JSONResponse([{"type": "file", "oid": git_blob_id(content), "size": len(content), "path": path}
                             for path, content in sorted(repo.commits[sha].items())])

    async def resolve(self, request: Request) -> Response:
        revision, _, filename = request.path_params["rest"].partition("/")
        repo_id, repo, sha, failure = self.find_commit(request, revision)
        if failure:
            return failure
        content = repo.commits[sha].get(filename)
        if content is None:
            return self.error(404, "EntryNotFound", f"{filename} does not exist at {revision}")
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_id(content)}"', "Content-Length": str(len(content))}
        if request.method == "HEAD":
            return Response(status_code=200, headers=headers)
        return Response(content, headers=headers, media_type="application/octet-stream")

    def app(self) -> Starlette:
        async def log_requests(scope, receive, send):
            if scope["type"] == "http":
                self.requests.append(f"{scope['method']} {scope['path']}")
            await inner(scope, receive, send)

        repo = "/api/models/{namespace}/{name}"
        inner = Starlette(routes=[
            Route("/api/repos/create", self.create_repo, methods=["POST"]),
            Route("/api/validate-yaml", self.validate_yaml, methods=["POST"]),
            Route(repo + "/preupload/{revision:path}", self.preupload, methods=["POST"]),
            Route(repo + "/commit/{revision:path}", self.commit, methods=["POST"]),
            Route(repo + "/revision/{revision:path}", self.revision_info, methods=["GET"]),
            Route(repo + "/tree/{revision:path}", self.tree, methods=["GET"]),
            Route("/{namespace}/{name}/resolve/{rest:path}", self.resolve, methods=["GET", "HEAD"]),
        ])
        return log_requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class HubServer:
    """Runs a FakeHub on 127.0.0.1 in a background thread."""

    def __init__(self, token: str):
        self.hub = FakeHub(token)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.hub.base_url = self.url
        config = uvicorn.Config(self.hub.app(), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("the local Hub server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
