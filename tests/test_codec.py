"""engine.codec: exact round trips, the type registry, and the errors for what cannot be stored or read."""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import Enum, Flag, IntEnum, auto
from typing import Any, Optional, Union
from uuid import UUID, uuid4

import msgpack
import pytest
from pydantic import BaseModel, Field

from barrierflow.engine import codec
from barrierflow.engine.codec import (
    decode,
    encode,
    is_registered,
    register_type,
    register_types_in_annotation,
    registered_name,
)
from barrierflow.engine.errors import CheckpointDecodeError, SerializationError
from barrierflow.engine.messages import Delivery, PendingRequest

# ----------------------------------------------------------------------------------------- test types


@register_type
class Color(Enum):
    RED = "red"
    GREEN = "green"


@register_type(name="tests.codec.Priority")
class Priority(IntEnum):
    LOW = 1
    HIGH = 2


@register_type
class Perm(Flag):
    READ = auto()
    WRITE = auto()


@register_type
@dataclass
class Point:
    x: int
    y: int


@register_type
@dataclass(slots=True, frozen=True)
class FrozenKey:
    name: str
    n: int


@dataclass(slots=True)
class Leaf:  # registered only through Order's annotation
    sku: str
    tags: set[str] = field(default_factory=set)


class Status(Enum):  # registered only through Order's annotation
    OPEN = 1
    DONE = 2


@dataclass
class Note:  # registered only through Order's annotation (inside Optional)
    text: str


@dataclass
class Cost:  # registered only through Order's annotation (inside dict values)
    amount: Decimal


@register_type
@dataclass
class Order:
    id: UUID
    leaves: list[Leaf]
    status: Status
    note: Optional[Note] = None  # noqa: UP045 - the typing spelling is what this test is about
    costs: dict[str, Cost] = field(default_factory=dict)
    total: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.total = len(self.leaves)


@register_type
@dataclass
class Tree:  # self-referencing
    value: int
    children: list[Tree] = field(default_factory=list)


class Address(BaseModel):  # registered only through Customer's annotation
    city: str


@register_type
class Customer(BaseModel):
    name: str = Field(alias="fullName")
    since: datetime
    address: Address | None = None
    tags: tuple[str, ...] = ()


@register_type
@dataclass
class Bag:
    items: dict[str, Any]


@register_type
@dataclass
class Envelope:  # shaped like a checkpoint, for error paths
    messages: list[Delivery]
    response_type: Any = None


@dataclass
class RenamedInner:
    v: int


@register_type
@dataclass
class RenamedOuter:
    inner: RenamedInner


@register_type
@dataclass
class EarlyRef:
    later: LaterDefined  # a forward reference: resolved only when a later walk meets EarlyRef again


@dataclass
class LaterDefined:
    v: int


@dataclass
class Unregistered:
    value: int


class UnregisteredModel(BaseModel):
    value: int


class UnregisteredEnum(Enum):
    A = 1


class Plain:
    pass


class MyList(list):
    pass


class MyDict(dict):
    pass


def roundtrip(value: Any) -> Any:
    return decode(encode(value))


# ----------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -1,
        2**63 - 1,
        -(2**63),
        2**64 - 1,
        2**64,
        -(2**63) - 1,
        10**40,
        -(10**40),
        1.5,
        float("inf"),
        "",
        "héllo",
        b"",
        b"\x00\xff",
        [],
        [1, "a", None],
        {},
        {"a": 1},
        (),
        (1,),
        (1, (2, 3), [4]),
        set(),
        {1, 2, 3},
        frozenset(),
        frozenset({"a", (1, 2)}),
        date(2024, 2, 29),
        time(23, 59, 59, 999999),
        timedelta(days=-3, seconds=5, microseconds=7),
        timedelta(0),
        UUID("12345678-1234-5678-1234-567812345678"),
        Decimal("1.10"),
        Decimal("-0"),
        Decimal("1E+3"),
        Decimal("Infinity"),
    ],
    ids=repr,
)
def test_builtin_values_round_trip_with_exact_type(value: Any) -> None:
    result = roundtrip(value)
    assert result == value
    assert type(result) is type(value)


def test_nan_and_decimal_nan_survive() -> None:
    result = roundtrip([float("nan"), Decimal("NaN")])
    assert result[0] != result[0] and type(result[0]) is float
    assert result[1].is_nan() and type(result[1]) is Decimal


def test_big_ints_keep_sign_and_size() -> None:
    values = [2**64, 2**100 + 7, -(2**64), -(2**200) - 1, 2**64 - 1, -(2**63)]
    assert roundtrip(values) == values


@pytest.mark.parametrize(
    "value",
    [
        datetime(2024, 1, 2, 3, 4, 5, 678901),
        datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        datetime(2024, 1, 2, 3, 4, 5, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=-12))),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(seconds=3, microseconds=5))),
        time(1, 2, 3, 4, tzinfo=timezone(timedelta(hours=-3))),
    ],
    ids=repr,
)
def test_datetimes_keep_microseconds_and_offset(value: datetime | time) -> None:
    result = roundtrip(value)
    assert result == value
    assert type(result) is type(value)
    assert result.utcoffset() == value.utcoffset()
    assert result.microsecond == value.microsecond
    assert (result.tzinfo is None) == (value.tzinfo is None)


def test_fold_is_preserved() -> None:
    assert roundtrip(datetime(2024, 11, 3, 1, 30, fold=1)).fold == 1


def test_bytes_like_and_builtin_subclasses_come_back_as_the_builtin() -> None:
    result = roundtrip(
        [bytearray(b"ab"), memoryview(b"cd"), MyList([1, 2]), MyDict(a=1), OrderedDict(b=2), Priority.LOW]
    )
    assert result == [b"ab", b"cd", [1, 2], {"a": 1}, {"b": 2}, Priority.LOW]
    assert [type(v) for v in result] == [bytes, bytes, list, dict, dict, Priority]


def test_dict_with_any_hashable_keys() -> None:
    value = {
        (1, "a"): "tuple",
        1: "int",
        "1": "str",
        b"1": "bytes",
        None: "none",
        frozenset({1}): "frozenset",
        FrozenKey("k", 1): "dataclass",
        Color.RED: "enum",
        date(2020, 1, 1): "date",
    }
    result = roundtrip(value)
    assert result == value
    assert [type(k) for k in result] == [type(k) for k in value]


def test_nested_containers_of_dataclasses() -> None:
    value = {
        "points": [Point(1, 2), Point(3, 4)],
        "by_key": {FrozenKey("a", 1): (Point(0, 0), {Point.__name__})},
        "set": {FrozenKey("b", 2)},
        "tuple": (Point(5, 6), [Point(7, 8)]),
    }
    result = roundtrip(value)
    assert result == value
    assert type(result["by_key"][FrozenKey("a", 1)]) is tuple
    assert type(result["set"]) is set
    assert type(result["tuple"][0]) is Point


def test_enums_round_trip_to_the_same_member() -> None:
    members = [Color.RED, Color.GREEN, Priority.HIGH, Perm.READ, Perm.READ | Perm.WRITE, Perm(0)]
    result = roundtrip(members)
    assert all(a is b for a, b in zip(result, members))


def test_frozen_slots_dataclass() -> None:
    result = roundtrip(FrozenKey("a", 3))
    assert result == FrozenKey("a", 3) and type(result) is FrozenKey
    assert not hasattr(result, "__dict__")


def test_init_false_fields_are_restored() -> None:
    order = Order(
        uuid4(), [Leaf("a"), Leaf("b", {"x"})], Status.OPEN, Note("n"), {"eur": Cost(Decimal("2.50"))}
    )
    order.total = 99  # differs from what __post_init__ would compute
    result = roundtrip(order)
    assert result == order
    assert result.total == 99
    assert type(result.leaves[1].tags) is set


def test_self_referencing_dataclass() -> None:
    tree = Tree(1, [Tree(2), Tree(3, [Tree(4)])])
    assert roundtrip(tree) == tree


def test_pydantic_model_round_trips_by_field_name_despite_alias() -> None:
    customer = Customer(
        fullName="Ada",
        since=datetime(2020, 5, 17, tzinfo=UTC),
        address=Address(city="Paris"),
        tags=("a", "b"),
    )
    result = roundtrip(customer)
    assert type(result) is Customer
    assert result == customer
    assert result.name == "Ada"
    assert type(result.tags) is tuple
    assert type(result.address) is Address


def test_any_field_holds_any_encodable_value() -> None:
    bag = Bag({"when": datetime(2024, 1, 1, tzinfo=UTC), "ids": (1, 2), "color": Color.GREEN})
    assert roundtrip(bag) == bag


# ------------------------------------------------------------------------------------------ type objects


@pytest.mark.parametrize(
    "cls",
    [
        str,
        int,
        float,
        bool,
        bytes,
        dict,
        list,
        tuple,
        set,
        frozenset,
        type(None),
        object,
        datetime,
        date,
        time,
        timedelta,
        UUID,
        Decimal,
        Any,
        Point,
        Color,
        Customer,
        Priority,
    ],
    ids=repr,
)
def test_type_objects_round_trip_to_the_same_object(cls: Any) -> None:
    assert roundtrip(cls) is cls
    assert roundtrip({"response_type": cls})["response_type"] is cls


@pytest.mark.parametrize("cls", [list[str], dict[str, int], Plain, Unregistered, int | str], ids=repr)
def test_other_type_objects_are_refused(cls: Any) -> None:
    with pytest.raises(SerializationError, match=r"type object .* at \$\[0\]\.response_type"):
        encode([Envelope([], response_type=cls)])


def test_unregistered_class_as_type_object_suggests_registering() -> None:
    with pytest.raises(SerializationError, match="register_type"):
        encode(Unregistered)


# -------------------------------------------------------------------------------------------- registry


def test_annotation_types_are_registered_recursively() -> None:
    for cls in (Leaf, Status, Note, Cost, Address):
        assert is_registered(cls), cls
    assert registered_name(Leaf) == f"{__name__}.Leaf"
    assert registered_name(Priority) == "tests.codec.Priority"
    assert registered_name(Unregistered) is None
    assert not is_registered(Unregistered)


def test_register_types_in_annotation_walks_generics_and_unions() -> None:
    @dataclass
    class A:
        v: int

    @dataclass
    class B:
        v: int

    class C(Enum):
        X = 1

    class D(BaseModel):
        v: int

    @dataclass
    class E:
        v: int

    annotation = dict[str, list[A | None]] | tuple[B, ...] | Optional[Union[C, int]]  # noqa: UP007, UP045
    register_types_in_annotation(annotation)
    register_types_in_annotation(typing.Annotated[list[D], "meta"])
    register_types_in_annotation(typing.Literal["x"])
    register_types_in_annotation(E)
    assert all(is_registered(cls) for cls in (A, B, C, D, E))
    assert not is_registered(int) and not is_registered(str)
    assert roundtrip([A(1), B(2), C.X, D(v=3), E(4)]) == [A(1), B(2), C.X, D(v=3), E(4)]


def test_register_type_call_forms_return_the_class() -> None:
    @dataclass
    class F:
        v: int

    @dataclass
    class G:
        v: int

    assert register_type(F) is F
    assert register_type(name="tests.codec.G")(G) is G
    assert register_type(F) is F  # again: a no-op
    assert registered_name(G) == "tests.codec.G"


def test_register_type_rejects_other_classes() -> None:
    for bad in (Plain, int, BaseModel, Point(1, 2)):
        with pytest.raises(TypeError, match="dataclasses, pydantic BaseModel subclasses and Enum subclasses"):
            register_type(bad)  # type: ignore[arg-type]
    assert not is_registered(Plain)


def test_a_name_belongs_to_one_class() -> None:
    @dataclass
    class Other:
        v: int

    with pytest.raises(ValueError, match="already registered"):
        register_type(Other, name="tests.codec.Priority")
    with pytest.raises(ValueError, match="already registered as"):
        register_type(Point, name="tests.codec.another-name")
    assert not is_registered(Other)
    assert registered_name(Point) == f"{__name__}.Point"


def test_explicit_name_replaces_a_name_given_through_an_annotation() -> None:
    assert registered_name(RenamedInner) == f"{__name__}.RenamedInner"  # via RenamedOuter's annotation
    register_type(RenamedInner, name="tests.codec.RenamedInner")
    assert registered_name(RenamedInner) == "tests.codec.RenamedInner"
    assert roundtrip(RenamedOuter(RenamedInner(1))) == RenamedOuter(RenamedInner(1))
    with pytest.raises(ValueError, match=re.escape("already registered as 'tests.codec.RenamedInner'")):
        register_type(RenamedInner, name="tests.codec.yet-another")  # an explicit name is final


def test_forward_reference_resolved_later_by_an_annotation_walk() -> None:
    assert is_registered(EarlyRef)
    assert not is_registered(LaterDefined)  # not defined yet when EarlyRef was registered
    register_types_in_annotation(list[EarlyRef])  # what the builder does with handler annotations
    assert is_registered(LaterDefined)
    assert roundtrip(EarlyRef(LaterDefined(5))) == EarlyRef(LaterDefined(5))


# ---------------------------------------------------------------------------------- encode errors


def test_unsupported_value_error_names_the_path() -> None:
    messages = [Delivery("a", 1), Delivery("b", Bag({})), Delivery("c", Bag({"ok": 1, "k": object()}))]
    with pytest.raises(SerializationError) as info:
        encode(Envelope(messages))
    assert str(info.value) == (
        "cannot encode value of type builtins.object at $.messages[2].message.items['k']: values of type "
        "builtins.object cannot be stored (supported: None, bool, int, float, str, bytes, list, dict, tuple, "
        "set, frozenset, datetime, date, time, timedelta, UUID, Decimal, type objects and registered "
        "dataclasses / pydantic models / enums)"
    )


def test_path_through_plain_dicts() -> None:
    with pytest.raises(SerializationError, match=re.escape("at $['a'][1][2]:")):
        encode({"a": [0, [1, 2, Plain()]]})


def test_path_through_dataclass_fields_and_tuples() -> None:
    with pytest.raises(SerializationError, match=r"at \$\[0\]\.items\['t'\]\[1\]:"):
        encode([Bag({"t": (1, Plain())})])


def test_path_into_a_set_and_a_dict_key() -> None:
    with pytest.raises(SerializationError, match=r"at \$\.keys\(\)\[3\]"):
        encode({"ok": 1, Unregistered.__name__: 2, FrozenKey("a", 1): 3, Plain(): 4})
    with pytest.raises(SerializationError, match=r"at \$\{0\}"):
        encode({Plain()})


def test_unregistered_dataclass_suggests_register_type() -> None:
    with pytest.raises(SerializationError) as info:
        encode({"payload": [Unregistered(1)]})
    message = str(info.value)
    assert "$['payload'][0]" in message
    assert "Unregistered" in message
    assert "barrierflow.register_type" in message
    assert not is_registered(Unregistered)  # encode never registers


@pytest.mark.parametrize("value", [UnregisteredModel(value=1), UnregisteredEnum.A], ids=repr)
def test_unregistered_model_or_enum_suggests_register_type(value: Any) -> None:
    with pytest.raises(SerializationError, match=r"not registered.*barrierflow\.register_type"):
        encode([value])


def test_serialization_error_is_a_type_error_and_encoder_recovers() -> None:
    with pytest.raises(TypeError):
        encode(Plain())
    assert decode(encode((1, 2))) == (1, 2)  # the per-thread packer is usable after a failure


def test_reference_cycle_is_reported_first_with_a_short_path() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(SerializationError) as caught:
        encode(loop)
    assert str(caught.value).startswith("reference cycle: the builtins.list at $ contains itself at $[0]")


def test_reference_cycle_through_a_record_names_where_it_starts_and_recurs() -> None:
    root = Tree(1, [Tree(2)])
    root.children[0].children.append(root)
    with pytest.raises(SerializationError) as caught:
        encode({"tree": root})
    message = str(caught.value)
    assert message.startswith("reference cycle:")
    assert "at $['tree'] contains itself at $['tree'].children[0].children[0]" in message


def test_a_shared_value_that_is_not_a_cycle_is_fine() -> None:
    shared = [1, 2]
    assert decode(encode([shared, shared, {"a": shared}])) == [[1, 2], [1, 2], {"a": [1, 2]}]


def test_too_deep_a_structure_gets_a_short_message() -> None:
    deep: list[Any] = []
    innermost = deep
    for _ in range(2000):
        innermost.append([])
        innermost = innermost[0]
    with pytest.raises(SerializationError) as caught:
        encode(deep)
    assert "nested too deeply" in str(caught.value)
    assert len(str(caught.value)) < 300


# ---------------------------------------------------------------------------------- decode errors


@pytest.fixture
def point_name_missing(monkeypatch: pytest.MonkeyPatch) -> bytes:
    """Bytes naming Point, and a registry where that name is missing (restored after the test)."""
    data = encode({"p": [Point(1, 2)]})
    monkeypatch.delitem(codec._BY_NAME, registered_name(Point))
    return data


def test_unknown_type_name_is_a_decode_error(point_name_missing: bytes) -> None:
    with pytest.raises(
        CheckpointDecodeError,
        match=re.escape(f"names type {registered_name(Point)!r}, which is not registered"),
    ):
        decode(point_name_missing)


def test_registry_restored_after_fixture() -> None:
    assert roundtrip(Point(1, 2)) == Point(1, 2)


def test_random_bytes_are_a_decode_error() -> None:
    rng_bytes = [os.urandom(64) for _ in range(200)] + [b"\xc1", b"\xd4\x63\x00", b"\x91\xd4\x02"]
    failures = 0
    for data in rng_bytes:
        try:
            decode(data)
        except CheckpointDecodeError:
            failures += 1
    assert failures == len(rng_bytes)  # never any other exception type, and garbage never decodes


def test_truncated_data_is_a_decode_error() -> None:
    data = encode({"order": Order(uuid4(), [Leaf("a")], Status.DONE), "at": datetime.now(UTC)})
    for cut in (1, len(data) // 2, len(data) - 1):
        with pytest.raises(CheckpointDecodeError):
            decode(data[:cut])


def test_trailing_bytes_are_a_decode_error() -> None:
    with pytest.raises(CheckpointDecodeError, match="2 unexpected trailing byte"):
        decode(encode([1, 2]) + b"\x01\x02")


def test_unknown_ext_code_is_a_decode_error() -> None:
    data = msgpack.packb([1, msgpack.ExtType(99, b"x")])
    with pytest.raises(CheckpointDecodeError, match="unknown msgpack ext code 99"):
        decode(data)


@pytest.mark.parametrize(
    "value",
    [
        msgpack.ExtType(codec.EXT_UUID, b"short"),
        msgpack.ExtType(codec.EXT_DATETIME, b"\x00" * 12),
        msgpack.ExtType(codec.EXT_DECIMAL, b"not a number"),
        msgpack.ExtType(codec.EXT_BUILTIN_TYPE, b"os.system"),
        msgpack.ExtType(codec.EXT_DATACLASS, b"\xff\xfe"),
        msgpack.ExtType(codec.EXT_TUPLE, b"x"),
        msgpack.ExtType(codec.EXT_BIGINT, b""),
    ],
    ids=repr,
)
def test_malformed_ext_payload_is_a_decode_error(value: msgpack.ExtType) -> None:
    with pytest.raises(CheckpointDecodeError, match=r"malformed|not a known"):
        decode(msgpack.packb([value]))


def test_header_outside_its_array_is_a_decode_error() -> None:
    header = msgpack.ExtType(codec.EXT_TUPLE, b"")
    for shape in (header, {"k": header}, [1, header]):
        with pytest.raises(CheckpointDecodeError, match="header outside"):
            decode(msgpack.packb(shape))


def test_wrong_kind_for_a_registered_name_is_a_decode_error() -> None:
    name = registered_name(Color).encode()
    with pytest.raises(
        CheckpointDecodeError, match=r"stores .* as a dataclass, but it is registered as a enum"
    ):
        decode(msgpack.packb([msgpack.ExtType(codec.EXT_DATACLASS, name), {}]))


def test_fields_the_class_rejects_are_a_decode_error() -> None:
    name = registered_name(Point).encode()
    header = msgpack.ExtType(codec.EXT_DATACLASS, name)
    for body in ({"x": 1}, {"x": 1, "y": 2, "z": 3}, [1, 2]):
        with pytest.raises(CheckpointDecodeError, match="Point"):
            decode(msgpack.packb([header, body]))
    model = msgpack.ExtType(codec.EXT_PYDANTIC, registered_name(Customer).encode())
    with pytest.raises(CheckpointDecodeError, match="do not exist"):
        decode(msgpack.packb([model, {"nope": 1}]))
    enum = msgpack.ExtType(codec.EXT_ENUM, registered_name(Color).encode())
    with pytest.raises(CheckpointDecodeError, match="not a member"):
        decode(msgpack.packb([enum, "BLUE"]))


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(CheckpointDecodeError):
        decode("not bytes")  # type: ignore[arg-type]


def test_engine_records_round_trip() -> None:
    request = PendingRequest("r1", "exec", {"question": ("a", "b")}, Customer)
    delivery = Delivery("target", [Point(1, 2)], ("s1", "s2"), request)
    result = roundtrip([delivery, {"r1": request}])
    assert result == [delivery, {"r1": request}]
    assert result[0].request.response_type is Customer
    assert dataclasses.is_dataclass(result[0])


def test_the_collector_is_paused_during_a_decode_and_always_restored() -> None:
    """Pausing the cyclic GC during checkpoint (de)coding halves its cost; it must never stay paused."""
    import gc

    from barrierflow.engine.codec import gc_paused

    seen = []

    @gc_paused
    def inner() -> None:
        seen.append(gc.isenabled())

    @gc_paused
    def outer(fail: bool) -> None:
        seen.append(gc.isenabled())
        inner()
        if fail:
            raise ValueError("boom")

    assert gc.isenabled()
    outer(False)
    with pytest.raises(ValueError):
        outer(True)
    assert seen == [False, False, False, False] and gc.isenabled()
    with pytest.raises(CheckpointDecodeError):
        codec.decode(b"\xc1")  # never valid msgpack
    assert gc.isenabled()
    gc.disable()  # an application that runs without the collector keeps it off
    try:
        outer(False)
        assert not gc.isenabled()
    finally:
        gc.enable()
