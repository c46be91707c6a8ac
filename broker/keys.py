"""Where an instance's data lives in Redis: one hash tag per instance, so one Redis Cluster slot.

Every key of instance ``I`` under prefix ``P`` is ``P:{I}:<suffix>``. Redis Cluster hashes only the text
between the first ``{`` and the next ``}``, so all of them land in one slot, and a Lua script may touch any of
them in one atomic call (the fenced write checks the lock and the epoch and writes the checkpoint keys
together). That is also why an instance id or a prefix containing a brace is refused: it would move or split
the hash tag.

=================  ==========  ===============================================================================
suffix             type        holds
=================  ==========  ===============================================================================
``lock``           string      the holder's token; PX = lease TTL
``owner``          string      JSON about the holder (host, pid, run_id, since); same PX as ``lock``
``epoch``          string/int  fencing counter, INCR on every reserve; PX = epoch TTL (below)
``index``          zset        checkpoint ids scored by a per-instance sequence (newest = highest)
``kfmap``          hash        checkpoint id -> keyframe id
``kfrefs``         hash        keyframe id -> number of heads that name it
``ckpt:<id>``      string      encoded checkpoint head
``kf:<id>``        string      encoded keyframe (full shared + executor state)
=================  ==========  ===============================================================================

The run queue (``broker/run_queue.py``) keeps its per-instance keys under ``rq:``, also in the slot:

=================  ==========  ===============================================================================
``rq:queue``       list        hex ids of the instance's queued runs, oldest first (FIFO per instance)
``rq:sched``       hash        ``entry``: the instance's entry in the ready stream while it has work;
                               ``active``: hex id of the run a coordinator holds (or must take over)
``rq:run:<hex>``   hash        one run's record: short fields only (state, times, attempts, coordinator...),
                               so Redis keeps it a listpack; PX = result TTL once it ended, and at most
                               ``keep_results`` ended runs per instance are kept
``rq:in:<hex>``    string      the run's submitted input, until it ends
``rq:res:<hex>``   string      its result (status, error, outputs, pending requests); same PX as the record
``rq:meta:<hex>``  string      its metadata, when it has some; same PX as the record
``rq:done``        string      hex ids of the instance's ended runs, newest first, concatenated (16
                               characters each); trims the records beyond ``keep_results``
``rq:events``      stream      every event of every run of the instance, capped (``events_maxlen``);
                               ``rq:events:spare`` exists only inside one script (its compaction)
=================  ==========  ===============================================================================

and a few keys outside any instance slot: ``P:rq:ready`` (stream of "instance I has runnable work", read by
the coordinators' consumer group), ``P:rq:instances`` (a trimmed index for listings) and two
pub/sub channels. Those make the run queue a single-shard design: see ``broker/run_queue.py``.

Other suffixes are free for records of other components in the instance's slot (``KeySpace.user_key``), e.g.
the workers' fenced results (``broker/results.py``). ``docs/keys.md`` lists every key of an instance with
its owner and lifetime.

**The epoch's lifetime.** The epoch fences a holder whose lease ended (``engine/store.py``). It only has to
exist while a lease that could still write exists, and every write checks the lock (the token) first: a
lease can write only while its lock key lives. So ``acquire``, ``renew`` and every fenced write extend the
epoch to ``epoch_ttl(lock_ttl, checkpoint_ttl) = max(checkpoint_ttl, EPOCH_LEASES * lock_ttl)``, always longer
than the lock's PX, and ``delete_instance`` deletes it. Timeline: t=0 run A reserves (epoch 7, lock PX 30 s,
epoch PX 300 s); A renews every 10 s; t=100 A releases; t=400 the epoch expires; t=500 run B reserves:
the epoch starts again at 1. A's lease (token a, epoch 7) cannot write at t=500 nor ever after: the lock holds
B's fresh random token. A paused holder whose lock expired is refused by the token already, whatever the epoch
says; the epoch only separates two leases of the same token, which exist within one lock lifetime (an acquire
retried after a lost reply). With ``checkpoint_ttl`` the epoch lives at least as long as the checkpoints, so
``status`` shows the epoch that wrote them.

**Foreign checkpoint ids.** Ids barrierflow mints (``instance@hex``) locate their keys by themselves. A
``Checkpoint`` a user builds with an id of their own is found through a pointer ``P:foreign:<id>`` ->
instance, written, expired and deleted by the same Lua call as its checkpoint (so it never outlives it, and
a checkpoint is never unfindable). The pointer is outside the instance's hash slot: on Redis Cluster a
script may not touch two slots, so there checkpoints must use minted ids (every ``Workflow`` does); writes of
minted ids never touch a pointer and stay in one slot.
"""

from __future__ import annotations

#: The epoch key outlives the lock by at least this many lease TTLs (see "The epoch's lifetime").
EPOCH_LEASES = 10

#: Suffixes owned by the store itself; ``user_key`` refuses them.
RESERVED_SUFFIXES = frozenset({"lock", "owner", "epoch", "index", "kfmap", "kfrefs"})
RESERVED_SUFFIX_PREFIXES = ("ckpt:", "kf:", "rq:")


def epoch_ttl(lock_ttl: float, checkpoint_ttl: float | None) -> float:
    """Seconds the epoch key lives after the last reserve, renewal or fenced write (see the module doc)."""
    return max(checkpoint_ttl or 0.0, EPOCH_LEASES * lock_ttl)


def check_instance_id(instance_id: str) -> str:
    """``instance_id`` if it can sit in a hash tag, else ``ValueError`` (braces would break the one slot)."""
    if not isinstance(instance_id, str) or not instance_id:
        raise ValueError(f"instance id must be a non-empty string, not {instance_id!r}")
    if "{" in instance_id or "}" in instance_id:
        raise ValueError(
            f"instance id {instance_id!r} contains '{{' or '}}': it would break the Redis Cluster hash tag "
            "that keeps an instance's keys in one slot; choose an id without braces"
        )
    return instance_id


class KeySpace:
    """Key names of every instance under one prefix (several deployments can share a Redis by prefix)."""

    def __init__(self, prefix: str) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(f"key prefix {prefix!r} must be non-empty and contain no braces")
        self.prefix = prefix

    def base(self, instance_id: str) -> str:
        """``P:{I}:`` — the Lua scripts append ``ckpt:<id>`` / ``kf:<id>`` to it (same slot)."""
        return f"{self.prefix}:{{{check_instance_id(instance_id)}}}:"

    def key(self, instance_id: str, suffix: str) -> str:
        return self.base(instance_id) + suffix

    def lock(self, instance_id: str) -> str:
        return self.key(instance_id, "lock")

    def owner(self, instance_id: str) -> str:
        return self.key(instance_id, "owner")

    def epoch(self, instance_id: str) -> str:
        return self.key(instance_id, "epoch")

    def index(self, instance_id: str) -> str:
        return self.key(instance_id, "index")

    def kfmap(self, instance_id: str) -> str:
        return self.key(instance_id, "kfmap")

    def kfrefs(self, instance_id: str) -> str:
        return self.key(instance_id, "kfrefs")

    def head(self, instance_id: str, checkpoint_id: str) -> str:
        return self.key(instance_id, f"ckpt:{checkpoint_id}")

    def keyframe(self, instance_id: str, keyframe_id: str) -> str:
        return self.key(instance_id, f"kf:{keyframe_id}")

    def foreign_prefix(self) -> str:
        """``P:foreign:`` — the pointer of a foreign checkpoint id is this plus the id (see the module doc)."""
        return f"{self.prefix}:foreign:"

    def foreign(self, checkpoint_id: str) -> str:
        return self.foreign_prefix() + checkpoint_id

    def pattern(self, instance_id: str) -> str:
        """A ``SCAN MATCH`` pattern for every key in the instance's slot (glob characters escaped)."""
        escaped = "".join("\\" + c if c in "*?[]\\" else c for c in self.base(instance_id))
        return escaped + "*"

    def user_key(self, instance_id: str, suffix: str) -> str:
        """A key for another component's record in the instance's slot; refuses the store's own names."""
        if not suffix or suffix in RESERVED_SUFFIXES or suffix.startswith(RESERVED_SUFFIX_PREFIXES):
            raise ValueError(
                f"key suffix {suffix!r} is empty or reserved by the checkpoint store and the run queue "
                f"({', '.join(sorted(RESERVED_SUFFIXES))}, ckpt:*, kf:*, rq:*); "
                "use your own namespace, e.g. 'result:...'"
            )
        return self.key(instance_id, suffix)

    # -- the run queue -------------------------------------------------------------------------------------

    def run_queue(self, instance_id: str) -> str:
        return self.key(instance_id, "rq:queue")

    def run_sched(self, instance_id: str) -> str:
        return self.key(instance_id, "rq:sched")

    def run_record(self, instance_id: str, run_hex: str) -> str:
        return self.key(instance_id, f"rq:run:{run_hex}")

    def run_result(self, instance_id: str, run_hex: str) -> str:
        return self.key(instance_id, f"rq:res:{run_hex}")

    def run_metadata(self, instance_id: str, run_hex: str) -> str:
        return self.key(instance_id, f"rq:meta:{run_hex}")

    def runs_done(self, instance_id: str) -> str:
        return self.key(instance_id, "rq:done")

    def events(self, instance_id: str) -> str:
        return self.key(instance_id, "rq:events")

    def queue_key(self, name: str) -> str:
        """``P:rq:<name>``: the run queue's keys and channels outside any instance slot."""
        return f"{self.prefix}:rq:{name}"
