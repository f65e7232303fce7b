"""`Network.skip`: keys a block knowingly leaves out of the network (YOLO26's training-only branch) are accounted
for by name with a reason, never silently; a key the file lacks cannot be skipped."""
from __future__ import annotations

import numpy as np
import pytest

from netdef.errors import NetdefError, WeightKeyError
from netdef.network import Network


def test_skipped_keys_are_neither_unused_nor_missing():
    net = Network({"a.weight": np.zeros(1, np.float32), "b.weight": np.zeros(1, np.float32)})
    with pytest.raises(WeightKeyError, match=r"2 key\(s\) in the weights were not used"):
        net.check_keys()
    net.skip(["a.weight"], "training only")
    assert net.key_report() == ({}, ["b.weight"]) and net.skipped == {"a.weight": "training only"}
    net.weight("b.weight", (1,))
    assert net.check_keys() == []


def test_skip_refuses_keys_the_file_lacks():
    net = Network({"a.weight": np.zeros(1, np.float32)})
    with pytest.raises(NetdefError, match=r"cannot skip keys the file does not have: \['b\.weight'\]"):
        net.skip(["a.weight", "b.weight"], "typo")
    assert net.skipped == {}
