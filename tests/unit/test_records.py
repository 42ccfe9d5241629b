"""Records pickle as their field values in order and come back equal, in kind and value."""

from __future__ import annotations

import copy
import pickle
from dataclasses import dataclass, field

import pytest

from switch.inbound import Inbound
from switch.iso20022 import views
from switch.records import pickled_by_position, record


@record
class Pair:
    left: str
    right: int | None = None


@record
class Nested:
    pair: Pair
    pairs: tuple[Pair, ...] = ()


@pickled_by_position
@dataclass(slots=True)
class Mutable:
    name: str
    items: list[int] = field(default_factory=list)


class Unmade(Pair):
    __slots__ = ()


@pytest.mark.parametrize("protocol", [2, 4, pickle.HIGHEST_PROTOCOL])
def test_a_record_comes_back_from_pickle_equal_and_of_its_own_class(protocol: int) -> None:
    shared = Pair(left="a", right=1)
    value = Nested(pair=shared, pairs=(shared, Pair(left="b")))
    back = pickle.loads(pickle.dumps(value, protocol))
    assert back == value and type(back) is Nested and type(back.pair) is Pair
    assert back.pairs[0] is back.pair  # one object pickled once stays one object
    assert hash(back) == hash(value)
    assert b"_restore" in pickle.dumps(shared, protocol)  # not the state dictionary


def test_copies_and_mutable_dataclasses_pickle_the_same_way() -> None:
    m = Mutable(name="x", items=[1, 2])
    back = pickle.loads(pickle.dumps(m))
    assert back == m and back.items is not m.items
    back.items.append(3)
    assert m.items == [1, 2]
    agent = views.Agent(bicfi="BNKAUS33XXX")
    assert copy.copy(agent) == agent and copy.deepcopy(agent) == agent
    inbound = Inbound("d" * 64, header=None, forward=b"<Document/>", uses_directory=True)
    assert pickle.loads(pickle.dumps(inbound)) == inbound


def test_a_subclass_that_is_not_made_a_record_refuses_to_pickle_as_its_base() -> None:
    with pytest.raises(TypeError, match="Unmade inherits a record's pickling"):
        pickle.dumps(Unmade(left="a"))


def test_a_field_named_like_the_pickling_internals_is_refused() -> None:
    with pytest.raises(TypeError, match="_r_"):

        @record
        class Clash:
            _r_self: int
