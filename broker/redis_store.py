"""``RedisStore``: the distributed store. Reservations and checkpoints of workflow instances live in Redis.

It implements the byte-level primitives of ``engine.store.Store`` (the public checkpoint API is written once
there) with the same semantics as ``engine.memory_store.MemoryStore``, so both pass one conformance suite.

Why every mutation is a single Lua call: the reservation is a lease that can end behind its holder's back
(the GC-pause timeline in ``engine/store.py``). A check of the lease followed by a separate write would
leave a gap in which another run reserves; checking token and epoch *inside* the script that writes closes
it. The same rule makes a write all-or-nothing: a failed call reports ``StoreError`` and a fenced-out call
``ReservationLostError``, never success.

Keys: see ``broker/keys.py`` (one hash tag per instance, so one Redis Cluster slot). Scripts: the ``.lua``
files beside this module, each with its KEYS/ARGV/reply header.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.exceptions import RedisError

from barrierflow.engine.checkpoint_format import CheckpointRecord
from barrierflow.engine.errors import ReservationLostError, StoreError, WorkflowRunInProgressError
from barrierflow.engine.store import Lease, ReservationInfo, Store, new_token, owner_info

from .connection import RedisOptions, async_client
from .keys import KeySpace, check_instance_id, epoch_ttl
from .per_loop import PerLoop
from .scripts import Scripts, milliseconds

logger = logging.getLogger("barrierflow.broker")

_WRITTEN, _LOCK_GONE, _EPOCH_MOVED = 0, 1, 2


@contextmanager
def _redis_errors(operation: str, instance_id: str | None) -> Iterator[None]:
    """Re-raise backend failures (connection, timeout, WRONGTYPE...) as ``StoreError`` naming the call."""
    try:
        yield
    except (RedisError, OSError) as exc:
        where = f" of instance {instance_id!r}" if instance_id is not None else ""
        raise StoreError(f"redis store: {operation}{where} failed: {type(exc).__name__}: {exc}") from exc


def _decode_owner(raw: bytes | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        owner = json.loads(raw)
    except ValueError:
        return {"raw": raw.decode("utf-8", "replace")}
    return owner if isinstance(owner, dict) else {"raw": owner}


def _describe_owner(owner: dict[str, Any]) -> str:
    since = owner.get("since")
    when = (
        datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds")
        if isinstance(since, int | float)
        else "?"
    )
    host, pid = owner.get("host", "?"), owner.get("pid", "?")
    return f"run {owner.get('run_id')!r} (host {host}, pid {pid}, since {when})"


def _as_record(reply: list[bytes] | None) -> tuple[bytes, bytes | None] | None:
    if reply is None:
        return None
    return reply[0], reply[1] if len(reply) > 1 else None


class _Clients(NamedTuple):
    """One event loop's clients: commands (and their scripts), and blocking waits on a pool of their own."""

    client: Redis
    scripts: Scripts
    waiting: Redis


def fenced_out(record: CheckpointRecord, lease: Lease, status: int) -> ReservationLostError:
    """The error of a checkpoint write refused by the fence (``status`` as ``fenced_write.lua`` replies)."""
    lease.lost = True
    why = "another run reserved it since" if status == _EPOCH_MOVED else "it expired or was taken over"
    return ReservationLostError(
        f"the lease on {lease.instance_id!r} (epoch {lease.epoch}) has ended ({why}); "
        f"checkpoint {record.checkpoint_id!r} was not written"
    )


class RedisStore(Store):
    """``Store`` on Redis. Construct with an async client, or with ``from_url``.

    ``lock_ttl``: lease TTL in seconds (the runner renews about every third of it). ``retention``:
    checkpoints kept per instance. ``checkpoint_ttl``: when set, an instance's checkpoint keys expire that
    many seconds after its newest checkpoint write (``docs/keys.md`` lists what expires when). ``prefix``
    separates deployments sharing one Redis.

    Lifecycle: ``async with RedisStore.from_url(url) as store:`` or ``await store.aclose()`` closes the
    connections the store opened; a loop that ends without it closes its own (``broker/per_loop.py``). A
    client passed in is the caller's to close.
    """

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "barrierflow",
        lock_ttl: float = 30.0,
        retention: int = 50,
        checkpoint_ttl: float | None = None,
    ) -> None:
        if retention < 1:
            raise ValueError("retention must keep at least one checkpoint")
        if lock_ttl <= 0:
            raise ValueError(f"lock_ttl must be positive seconds, not {lock_ttl!r}")
        if checkpoint_ttl is not None and checkpoint_ttl <= 0:
            raise ValueError(f"checkpoint_ttl must be positive seconds or None, not {checkpoint_ttl!r}")
        encoder = getattr(client, "get_encoder", None)
        if encoder is not None and encoder().decode_responses:
            raise ValueError("RedisStore needs a binary-safe client: create it without decode_responses=True")
        self.keys = KeySpace(prefix)
        self.lock_ttl = lock_ttl
        self.retention = retention
        self.checkpoint_ttl = checkpoint_ttl
        self._epoch_ms = milliseconds(epoch_ttl(lock_ttl, checkpoint_ttl))
        # from_url stores make one client per event loop (see broker/per_loop.py); a client passed in is the
        # caller's, used as it is
        self._bound: PerLoop[_Clients] | None = None
        self._fixed = _Clients(client, Scripts.register(client), client)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "barrierflow",
        lock_ttl: float = 30.0,
        retention: int = 50,
        checkpoint_ttl: float | None = None,
        **client_options: Any,
    ) -> RedisStore:
        """A store on ``redis://[:password@]host:port/db`` or ``rediss://`` (TLS).

        ``client_options``: the fields of ``broker.connection.RedisOptions`` (``max_connections`` per event
        loop, default 100, commands beyond it wait up to ``pool_timeout`` for a free connection;
        ``socket_timeout``, ``health_check_interval``, ``retries``...) and any other redis-py keyword
        (``client_name``, ``ssl_ca_certs``...). redis-py parses replies with hiredis whenever it is installed.
        """
        if client_options.get("decode_responses"):
            raise ValueError("RedisStore needs a binary-safe client: decode_responses must stay False")
        client_options["decode_responses"] = False
        options, given = RedisOptions.split(client_options)
        store = cls(
            async_client(url, options, **given),  # used only outside an event loop; never connects there
            prefix=prefix,
            lock_ttl=lock_ttl,
            retention=retention,
            checkpoint_ttl=checkpoint_ttl,
        )
        store.url, store.options = url, options

        def connect() -> _Clients:
            client = async_client(url, options, **given)
            waiting = async_client(url, options.for_waiting(), **given)
            return _Clients(client, Scripts.register(client), waiting)

        async def close(bound: _Clients) -> None:
            await bound.client.aclose()
            await bound.waiting.aclose()

        store._bound = PerLoop(connect, close)
        return store

    url: str | None = None
    options: RedisOptions | None = None

    def _current(self) -> _Clients:
        """The clients (and scripts) for the running event loop."""
        if self._bound is None:
            return self._fixed
        try:
            return self._bound.get()
        except RuntimeError:  # no running loop (a sync caller inspecting the store)
            return self._fixed

    @property
    def client(self) -> Redis:
        """The redis.asyncio client for the running event loop."""
        return self._current().client

    @property
    def epoch_ttl_ms(self) -> int:
        """How long an epoch key lives after each reserve, renewal or fenced write (``keys.epoch_ttl``), in ms;
        scripts of other components that take or extend this store's leases (the run queue's) extend it too."""
        return self._epoch_ms

    @property
    def blocking_client(self) -> Redis:
        """The client for blocking waits (``BRPOP``, ``XREAD BLOCK``) of the running loop: its own pool.

        A blocking command holds its connection for the whole wait. On the command pool, a hundred waiting
        runs would hold every connection, and lease renewals would queue behind them until the lease is
        lost; on a pool of their own (``max_blocking_connections``), waits never delay a command. (A store
        built on a client passed in uses that client for both.)
        """
        return self._current().waiting

    @property
    def _scripts(self) -> Scripts:
        return self._current().scripts

    @property
    def prefix(self) -> str:
        return self.keys.prefix

    @property
    def uses_hiredis(self) -> bool:
        """Whether this client's connections parse replies with hiredis (redis-py picks it when installed)."""
        pool = getattr(self.client, "connection_pool", None)
        if pool is None:
            return False
        from redis.asyncio.connection import DefaultParser

        parser = pool.connection_kwargs.get("parser_class", DefaultParser)
        return "Hiredis" in parser.__name__

    async def aclose(self) -> None:
        """Close the connections this store opened in the running loop (a client passed in is the caller's)."""
        if self._bound is not None:
            await self._bound.aclose()

    async def __aenter__(self) -> RedisStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def reserve(self, instance_id: str, token: str, owner: dict[str, Any]) -> Lease:
        keys = self.keys
        with _redis_errors("reserve", instance_id):
            reply = await self._scripts.acquire(
                keys=[keys.lock(instance_id), keys.owner(instance_id), keys.epoch(instance_id)],
                args=[token, json.dumps(owner, default=str), milliseconds(self.lock_ttl), self._epoch_ms],
            )
        if reply[0] == 1:
            return Lease(instance_id, token, int(reply[1]), self.lock_ttl)
        holder = _decode_owner(reply[1])
        pttl = int(reply[2]) if len(reply) > 2 and reply[2] is not None else -1
        expiry = f"; its lease ends in {pttl / 1000:.1f} s unless renewed" if pttl >= 0 else ""
        raise WorkflowRunInProgressError(
            f"workflow instance {instance_id!r} is reserved by {_describe_owner(holder)}{expiry}", holder
        )

    def _lease_keys(self, lease: Lease) -> list[str]:
        keys = self.keys
        return [keys.lock(lease.instance_id), keys.owner(lease.instance_id), keys.epoch(lease.instance_id)]

    async def renew(self, lease: Lease) -> bool:
        """Extend the lease; never takes longer than a third of its TTL (``StoreError`` then).

        The bound is what keeps renewal fail-stop: a call stuck on a half-open connection, or retrying
        through a Redis outage, would otherwise hold the renewer past the lease's end while the run goes on
        writing. The renewer counts a ``StoreError`` as a failed renewal and marks the lease lost once
        renewals have failed for a whole TTL (``engine/workflow.py``).
        """
        limit = lease.ttl / 3
        try:
            async with asyncio.timeout(limit):
                with _redis_errors("renew", lease.instance_id):
                    renewed = await self._scripts.renew(
                        keys=self._lease_keys(lease),
                        args=[lease.token, lease.epoch, milliseconds(lease.ttl), self._epoch_ms],
                    )
        except TimeoutError as exc:
            raise StoreError(
                f"redis store: renew of instance {lease.instance_id!r} got no answer within {limit:g} s"
            ) from exc
        if not renewed:
            lease.lost = True
            return False
        return True

    async def release(self, lease: Lease) -> bool:
        with _redis_errors("release", lease.instance_id):
            released = await self._scripts.release(
                keys=self._lease_keys(lease), args=[lease.token, lease.epoch, 0]
            )
        if not released:
            logger.warning(
                "release of workflow instance %r (epoch %d) changed nothing: this run no longer held it "
                "(its lease expired or another run reserved it since)",
                lease.instance_id,
                lease.epoch,
            )
        return bool(released)

    async def describe(self, instance_id: str) -> ReservationInfo:
        keys = self.keys
        lock = keys.lock(instance_id)
        with _redis_errors("describe", instance_id):
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.exists(lock).pttl(lock).get(keys.owner(instance_id)).get(keys.epoch(instance_id))
                exists, pttl, owner, epoch = await pipe.execute()
        epoch_number = int(epoch) if epoch is not None else 0
        if not exists:
            return ReservationInfo(instance_id, held=False, epoch=epoch_number)
        ttl_left = pttl / 1000 if pttl >= 0 else None
        return ReservationInfo(instance_id, True, epoch_number, ttl_left, _decode_owner(owner))

    # -- fenced records of other components --------------------------------------------------------------

    async def write_record(self, record: CheckpointRecord, lease: Lease | None) -> None:
        instance_id = record.instance_id
        keys, args = self.checkpoint_call(record, lease)
        with _redis_errors(f"write of checkpoint {record.checkpoint_id!r}", instance_id):
            status = await self._scripts.fenced_write(keys=keys, args=args)
        if status == _WRITTEN:
            return
        assert lease is not None  # an unfenced write is never refused
        raise fenced_out(record, lease, status)

    def checkpoint_call(self, record: CheckpointRecord, lease: Lease | None) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of ``fenced_write.lua`` for ``record`` (the run queue's journaled write extends them).

        ``ValueError`` when the lease or the id names another instance than the record.
        """
        instance_id = record.instance_id
        if lease is not None and lease.instance_id != instance_id:
            raise ValueError(
                f"checkpoint {record.checkpoint_id!r} belongs to {instance_id!r} but the lease is on "
                f"{lease.instance_id!r}"
            )
        named = self.instance_of(record.checkpoint_id)
        if named is not None and named != instance_id:
            raise ValueError(
                f"checkpoint id {record.checkpoint_id!r} names instance {named!r}, but the checkpoint belongs to "
                f"{instance_id!r}: use engine.checkpoint.new_checkpoint_id({instance_id!r}) or an id of your own"
            )
        keys = self.keys
        return [
            keys.lock(instance_id),
            keys.epoch(instance_id),
            keys.index(instance_id),
            keys.kfmap(instance_id),
            keys.kfrefs(instance_id),
            keys.head(instance_id, record.checkpoint_id),
            keys.keyframe(instance_id, record.keyframe_id),
        ], [
            "" if lease is None else lease.token,
            0 if lease is None else lease.epoch,
            record.checkpoint_id,
            record.keyframe_id,
            record.head,
            0 if record.keyframe is None else 1,
            b"" if record.keyframe is None else record.keyframe,
            self.retention,
            0 if self.checkpoint_ttl is None else milliseconds(self.checkpoint_ttl),
            *self._layout(instance_id),
            instance_id,
            self._epoch_ms,
        ]

    async def read_record(self, checkpoint_id: str) -> tuple[bytes, bytes | None] | None:
        """Head and keyframe in one ``EVALSHA`` (no pipeline: a pipeline asks ``SCRIPT EXISTS`` first)."""
        instance_id = await self._locate(checkpoint_id)
        if instance_id is None:
            return None
        with _redis_errors(f"read of checkpoint {checkpoint_id!r}", instance_id):
            return _as_record(await self._read(checkpoint_id, instance_id))

    def _read(self, checkpoint_id: str, instance_id: str, client: Any = None) -> Any:
        """``read_record.lua`` of one checkpoint, on ``client`` (a pipeline) or the store's client."""
        keys = self.keys
        return self._scripts.read_record(
            keys=[keys.head(instance_id, checkpoint_id), keys.kfmap(instance_id)],
            args=[checkpoint_id, keys.base(instance_id)],
            client=client,
        )

    async def read_records(self, checkpoint_ids: list[str]) -> list[tuple[bytes, bytes | None] | None]:
        """Heads and keyframes of several checkpoints in one pipeline (one round trip, however many)."""
        located = [(checkpoint_id, await self._locate(checkpoint_id)) for checkpoint_id in checkpoint_ids]
        wanted = [(checkpoint_id, instance_id) for checkpoint_id, instance_id in located if instance_id]
        replies = iter(())
        if wanted:
            instances = ", ".join(sorted({instance_id for _, instance_id in wanted}))
            with _redis_errors(f"read of {len(wanted)} checkpoint(s)", instances):
                async with self.client.pipeline(transaction=False) as pipe:
                    for checkpoint_id, instance_id in wanted:
                        await self._read(checkpoint_id, instance_id, pipe)
                    replies = iter(await pipe.execute())
        return [_as_record(next(replies)) if instance_id else None for _, instance_id in located]

    async def list_ids(self, instance_id: str) -> list[str]:
        with _redis_errors("list_ids", instance_id):
            ids = await self.client.zrevrange(self.keys.index(instance_id), 0, -1)
        return [i.decode() for i in ids]

    async def latest_id(self, instance_id: str) -> str | None:
        with _redis_errors("latest_id", instance_id):
            ids = await self.client.zrevrange(self.keys.index(instance_id), 0, 0)
        return ids[0].decode() if ids else None

    async def delete_record(self, checkpoint_id: str) -> bool:
        instance_id = await self._locate(checkpoint_id)
        if instance_id is None:
            return False
        keys = self.keys
        with _redis_errors(f"delete of checkpoint {checkpoint_id!r}", instance_id):
            deleted = await self._scripts.delete_record(
                keys=[keys.index(instance_id), keys.kfmap(instance_id), keys.kfrefs(instance_id)],
                args=[checkpoint_id, *self._layout(instance_id)],
            )
        return bool(deleted)

    def _layout(self, instance_id: str) -> tuple[str, str, str]:
        """The scripts' ARGV naming an instance's keys: base ``P:{I}:``, minted-id prefix ``I@``, pointers."""
        return self.keys.base(instance_id), f"{instance_id}@", self.keys.foreign_prefix()

    async def delete_instance(self, instance_id: str) -> int:
        """Delete every key of the instance; how many it had. ``WorkflowRunInProgressError`` while held.

        Everything in the instance's hash slot goes (``SCAN`` on ``P:{I}:*``: checkpoints, epoch, the
        workers' records, and keys of components added later), and the pointers of its foreign checkpoint
        ids. The store reserves the instance first, so no run starts while its keys are being deleted, and
        a run holding it makes this refuse instead (nothing deleted). ``SCAN`` walks the whole keyspace of
        the database: an administrative operation, not one for a hot path.
        """
        lease = await self.reserve(instance_id, new_token(), owner_info("delete_instance"))
        keys, client = self.keys, self.client
        kept = {keys.lock(instance_id), keys.owner(instance_id), keys.epoch(instance_id)}
        deleted = 0
        try:
            with _redis_errors("delete_instance", instance_id):
                ids = [raw.decode() for raw in await client.hkeys(keys.kfmap(instance_id))]
                for checkpoint_id in ids:  # a pointer is this instance's only if it names this instance
                    if self.instance_of(checkpoint_id) != instance_id:
                        deleted += await self._scripts.own_key(
                            keys=[keys.foreign(checkpoint_id)], args=[instance_id, 0]
                        )
                batch: list[bytes] = []
                async for name in client.scan_iter(match=keys.pattern(instance_id), count=1000):
                    if name.decode() not in kept:
                        batch.append(name)
                    if len(batch) >= 500:
                        deleted += await self._delete_batch(lease, batch)
                        batch = []
                if batch:
                    deleted += await self._delete_batch(lease, batch)
        except BaseException:
            await self.release(lease)
            raise
        with _redis_errors("delete_instance", instance_id):  # the lease's keys and the epoch, last
            released = await self._scripts.release(
                keys=self._lease_keys(lease), args=[lease.token, lease.epoch, 1]
            )
        if not released:
            raise ReservationLostError(f"delete_instance of {instance_id!r} lost its reservation")
        return deleted + (lease.epoch > 1)  # epoch 1: this reservation made the epoch key, it was not there

    async def _delete_batch(self, lease: Lease, names: list[bytes]) -> int:
        if not await self.renew(lease):  # the deletion outlived its lease: another run may hold it now
            raise ReservationLostError(f"delete_instance of {lease.instance_id!r} lost its reservation")
        return int(await self.client.unlink(*names))

    async def _locate(self, checkpoint_id: str) -> str | None:
        """The instance whose keys hold ``checkpoint_id``; ``None`` when no key of this store could."""
        instance_id = self.instance_of(checkpoint_id)
        if instance_id is None:
            with _redis_errors(f"lookup of checkpoint id {checkpoint_id!r}", "?"):
                found = await self.client.get(self.keys.foreign(checkpoint_id))
            if found is None:
                return None
            instance_id = found.decode()
        try:
            return check_instance_id(instance_id)
        except ValueError:
            return None
