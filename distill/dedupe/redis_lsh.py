"""`--lsh-storage redis://HOST:PORT[/DB]`: the LSH index in Redis through datasketch's storage
support, so it lives in Redis, not in this process. The password comes from the URL or, better,
REDIS_PASSWORD; the run's keys are deleted afterwards."""

from __future__ import annotations

import os
import secrets
from urllib.parse import urlparse

import numpy as np

from distill.errors import UsageError
from distill.minhash import LshParams, permutations


class RedisLsh:
    """datasketch.MinHashLSH with Redis storage: the index lives in Redis, not in this process."""

    def __init__(self, url: str, params: LshParams, seed: int) -> None:
        from datasketch import MinHashLSH

        self.url = url
        host, port, db = parse_redis_url(url)
        # a password comes from the URL or, better, the REDIS_PASSWORD environment variable
        password = urlparse(url).password or os.environ.get("REDIS_PASSWORD") or None
        self.basename = f"distill-{os.getpid()}-{secrets.token_hex(4)}".encode()
        self.config = {
            "type": "redis",
            "basename": self.basename,
            "redis": {"host": host, "port": port, "db": db, "password": password},
        }
        self.perms = permutations(params.num_perm, seed)
        self.seed = seed
        self.client = connect(url, "--lsh-storage", host, port, db)
        self.lsh = MinHashLSH(
            num_perm=params.num_perm,
            params=(params.bands, params.rows),
            storage_config=self.config,
        )

    def add_batch(self, ordinals: list[int], sigs: np.ndarray) -> list[tuple[int, int]]:
        """Insert a batch of documents and return (earlier, later) candidate pairs."""
        from datasketch import MinHash

        minhashes = [
            MinHash(
                num_perm=sigs.shape[0],
                seed=self.seed,
                hashvalues=sigs[:, k],
                permutations=np.array(self.perms),
                scheme="affine32",
            )
            for k in range(len(ordinals))
        ]
        with self.lsh.insertion_session() as session:
            for key, mh in zip(ordinals, minhashes, strict=True):
                session.insert(key, mh, check_duplication=False)
        pairs = []
        for key, mh in zip(ordinals, minhashes, strict=True):
            for other in self.lsh.query(mh):
                if other < key:
                    pairs.append((int(other), key))
        return pairs

    def close(self) -> None:
        """Delete this run's keys from Redis."""
        try:
            keys = list(self.client.scan_iter(match=self.basename + b"*", count=1000))
            for i in range(0, len(keys), 1000):
                self.client.delete(*keys[i : i + 1000])
        except Exception:  # cleaning up is best effort; the keys carry a unique prefix
            pass


def connect(url: str, flag: str, host: str, port: int, db: int):  # noqa: ANN201 - redis.Redis
    """A Redis client that has answered a PING, or one line saying why not. The password comes
    from the URL or, better, the REDIS_PASSWORD environment variable."""
    password = urlparse(url).password or os.environ.get("REDIS_PASSWORD") or None
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError:
        raise UsageError(
            f"{flag} redis:// needs the redis package: pip install 'distill[redis]'"
        ) from None
    client = redis.Redis(
        host=host,
        port=port,
        db=db,
        password=password,
        socket_connect_timeout=5,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        client.ping()
    except redis.RedisError as e:  # ConnectionError, AuthenticationError and friends
        raise UsageError(
            f"{flag} {redact(url)}: cannot use Redis ({type(e).__name__}: {e}); "
            f"start redis-server there (password: REDIS_PASSWORD) or drop {flag}"
        ) from None
    return client


def parse_redis_url(url: str) -> tuple[str, int, int]:
    u = urlparse(url)
    if u.scheme != "redis" or not u.hostname:
        raise UsageError(f"--lsh-storage {redact(url)}: expected redis://HOST:PORT[/DB]")
    try:
        port = u.port or 6379
        db = int(u.path.strip("/") or 0)
    except ValueError:
        raise UsageError(f"--lsh-storage {redact(url)}: expected redis://HOST:PORT[/DB]") from None
    return u.hostname, port, db


def redact(url: str | None) -> str | None:
    """A storage URL without any password in it."""
    if not url:
        return url
    u = urlparse(url)
    if u.password:
        return url.replace(f":{u.password}@", ":***@")
    return url
