"""A real S3-compatible server on 127.0.0.1 for the tests: `moto` in server mode (the `dev` extra).

The server checks credentials: it is started with `INITIAL_NO_AUTH_ACTION_COUNT`, so the calls that
create the IAM user, its policy, its access key and the bucket go through unsigned, and every later
call must be signed by that user's key (a wrong secret is refused, as AWS refuses it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from pg_server import free_port

SETUP_CALLS = 4  # create_user, put_user_policy, create_access_key, create_bucket
REGION = "us-east-1"


class S3Server:
    """`with S3Server(log_dir) as s3:` a moto server with bucket `bucket` and a user allowed to use it."""

    def __init__(self, log_dir: Path, bucket: str = "ledger"):
        self.port = free_port()
        self.bucket = bucket
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = open(log_dir / "moto.log", "wb")  # noqa: SIM115 - closed in stop()
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("FAKETIME")}
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(SETUP_CALLS)
        self._process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                         env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.access_key = self.secret_key = ""

    def __enter__(self) -> S3Server:
        try:
            self._wait_listening()
            self._create_user_and_bucket()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait_listening(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"moto server exited with {self._process.returncode}; see {self._log.name}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"moto server did not listen on {self.port} within {timeout_s:.0f} s")

    def client(self, service: str, **credentials):
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=credentials.get("key", "setup"),
                            aws_secret_access_key=credentials.get("secret", "setup-secret"))

    def _create_user_and_bucket(self) -> None:
        iam = self.client("iam")
        iam.create_user(UserName="ledger")
        iam.put_user_policy(UserName="ledger", PolicyName="lake", PolicyDocument=(
            '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'))
        key = iam.create_access_key(UserName="ledger")["AccessKey"]
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
        self.s3().create_bucket(Bucket=self.bucket)

    def s3(self):
        return self.client("s3", key=self.access_key, secret=self.secret_key)

    def env(self, **changes: str) -> dict[str, str]:
        """The AWS_* variables a lake on this server needs."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": REGION} | changes

    def keys(self, prefix: str = "") -> list[str]:
        found = self.s3().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for page in found for o in page.get("Contents", []))

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=30)
        self._log.close()
