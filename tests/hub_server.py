"""A stand-in for the Hugging Face Hub's upload API on 127.0.0.1 (tests of ``zoo push``).

It answers what huggingface_hub's ``create_repo`` + ``upload_folder`` send: repo creation,
the ``preupload`` question (every file "regular": sent inline, base64, in the commit) and the
commit itself, and keeps what was committed: ``server.repos[repo_id][path] = bytes``.
"""
from __future__ import annotations

import base64
import gzip
import http.server
import json
import threading


class HubServer:
    def __init__(self, token: str | None = None):
        self.repos: dict[str, dict[str, bytes]] = {}
        self.requests: list[str] = []
        self.token = token
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _body(self) -> bytes:
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    data = gzip.decompress(data)
                return data

            def _send(self, status: int, obj) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):  # noqa: N802 - http.server's naming
                hub.requests.append(f"POST {self.path}")
                body = self._body()
                if hub.token and self.headers.get("Authorization") != f"Bearer {hub.token}":
                    return self._send(401, {"error": "Invalid credentials in Authorization"})
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts[:2] == ["api", "validate-yaml"]:  # the model card's front matter
                    return self._send(200, {"errors": [], "warnings": []})
                if parts[:3] == ["api", "repos", "create"]:
                    spec = json.loads(body)
                    repo = f"{spec.get('organization') or 'user'}/{spec['name']}"
                    hub.repos.setdefault(repo, {})
                    return self._send(200, {"url": f"{hub.url}/{repo}", "name": repo})
                if parts[:2] == ["api", "models"] and parts[4] == "preupload":
                    files = json.loads(body)["files"]
                    return self._send(200, {"files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                        for f in files]})
                if parts[:2] == ["api", "models"] and parts[4] == "commit":
                    repo = f"{parts[2]}/{parts[3]}"
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item.get("key") == "file":
                            value = item["value"]
                            hub.repos.setdefault(repo, {})[value["path"]] = \
                                base64.b64decode(value["content"])
                    oid = "0" * 40
                    return self._send(200, {"commitUrl": f"{hub.url}/{repo}/commit/{oid}",
                                            "commitOid": oid})
                return self._send(404, {"error": f"no route {self.path}"})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "HubServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
