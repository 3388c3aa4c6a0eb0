"""The per-suite summary lines that `make test` prints."""

from types import SimpleNamespace

from tests.suites import suite_name, summary_lines


def report(nodeid, when="call"):
    return SimpleNamespace(nodeid=nodeid, when=when)


def test_suites_are_named_after_their_file():
    assert suite_name("tests/test_faults.py::test_x[a]") == "faults"
    assert suite_name("tests/test_hostile_frames.py::test_frame[not-json]") == "hostile frames"
    assert suite_name("tests/test_chat_socket.py::test_y") == "chat socket"
    assert suite_name("tests/e2e/test_xss_browser.py::test_z") == "xss (browser)"
    assert suite_name("tests/e2e/test_ui_list_browser.py::test_z") == "ui list (browser)"


def test_a_test_counts_once_with_its_worst_phase():
    stats = {
        "passed": [
            report("tests/test_faults.py::a"),
            report("tests/test_faults.py::b"),
            report("tests/test_faults.py::c"),
            report("tests/test_hostile_frames.py::f[1]"),
        ],
        # c passed its call and then failed in teardown: an error, not a pass.
        "failed": [report("tests/test_faults.py::c", when="teardown")],
        "error": [report("tests/test_limits.py::d", when="setup")],
        "skipped": [report("tests/test_limits.py::e", when="setup")],
        "warnings": [SimpleNamespace(message="not a test")],
        "": [report("tests/test_faults.py::a", when="setup")],
    }
    assert summary_lines(stats) == [
        "abuse limits: 1 skipped, 1 error",
        "faults: 2 passed, 1 error",
        "hostile frames: 1 passed",
    ]
