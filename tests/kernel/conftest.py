"""Fixtures: one running tunelab kernel per test module, driven with jupyter_client."""
import jupyter_client
import pytest

# The first start compiles the tunelab library inside evcxr (minutes on a new machine).
STARTUP_TIMEOUT = 1800


@pytest.fixture(scope="module")
def kernel():
    km, kc = jupyter_client.manager.start_new_kernel(kernel_name="tunelab", startup_timeout=120)
    # Wait for the preload (the first cell blocks until the library is compiled and loaded).
    reply = kc.execute_interactive("1", timeout=STARTUP_TIMEOUT)
    assert reply["content"]["status"] == "ok", reply
    yield kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def run(kc, code, timeout=600):
    """Executes `code`; returns (reply content, list of (msg_type, content) iopub messages)."""
    msgs = []
    reply = kc.execute_interactive(code, timeout=timeout, allow_stdin=False, output_hook=lambda m: msgs.append((m["msg_type"], m["content"])))
    return reply["content"], msgs
