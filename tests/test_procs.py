"""common/procs.py: free ports below the ephemeral range, never handed out twice."""

from common.procs import _ephemeral_low, free_port


def test_free_ports_avoid_the_ephemeral_range_and_never_repeat():
    """Outgoing connections take ephemeral ports; a server port picked there can be stolen before it is bound."""
    low = _ephemeral_low()
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= port < low for port in ports)
