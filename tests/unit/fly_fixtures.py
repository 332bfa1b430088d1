"""The Fly double as the unit tests of the Fly client, modules and lock drive it: one server per test
module (real HTTP on loopback, every request and answer validated against Fly's spec), reset to its seed
before each test and checked afterwards for anything off the spec."""
import pytest

from sandbox import fly_double


def double_fixtures(token, start_seconds=0.2):
    """(server, fly_api) fixtures for a test module whose token is `token` (each module its own canary),
    its Machines taking start_seconds to start."""

    @pytest.fixture(scope='module')
    def server():
        double = fly_double.serve('127.0.0.1', 0, token, start_seconds=start_seconds, validate=True)
        yield double
        double.shutdown()

    @pytest.fixture
    def fly_api(server):  # pylint: disable=redefined-outer-name
        """The double, back at its seed, checked afterwards for requests or answers off Fly's spec."""
        server.state.reset()
        yield server
        assert server.state.spec_errors == []

    return server, fly_api
