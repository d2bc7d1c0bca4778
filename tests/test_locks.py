"""Participant locks on file systems that refuse flock (simulated): only 'would block' means busy."""
import errno
import logging

import pytest

from bids_sclesion.utils import locks
from bids_sclesion.utils.locks import ParticipantLocks


def _flock_failing_with(code):
    def flock(fd, operation):
        raise OSError(code, f"simulated {errno.errorcode[code]}")
    return flock


@pytest.mark.parametrize("code", [errno.EWOULDBLOCK, errno.EAGAIN])
def test_a_lock_held_elsewhere_is_busy(tmp_path, monkeypatch, code):
    monkeypatch.setattr(locks.fcntl, "flock", _flock_failing_with(code))
    with ParticipantLocks(tmp_path) as held:
        busy = held.acquire(["01", "02"])
    assert set(busy) == {"01", "02"} and held.unsupported is None
    assert busy["01"] == "another bids_sclesion run"


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL])
def test_a_file_system_without_locks_warns_once_and_goes_on(tmp_path, monkeypatch, caplog, code):
    monkeypatch.setattr(locks.fcntl, "flock", _flock_failing_with(code))
    with caplog.at_level(logging.WARNING, logger="bids_sclesion"), ParticipantLocks(tmp_path) as held:
        assert held.acquire(["01", "02", "03"]) == {}, "no participant is skipped"
        assert held.unsupported
    warnings = [r for r in caplog.records if "does not support locks" in r.getMessage()]
    assert len(warnings) == 1 and str(tmp_path) in warnings[0].getMessage()


def test_real_locks_still_exclude_a_second_holder(tmp_path):
    with ParticipantLocks(tmp_path) as first, ParticipantLocks(tmp_path) as second:
        assert first.acquire(["01"]) == {}
        assert set(second.acquire(["01", "02"])) == {"01"}
