#!/usr/bin/env bash
# The fast lane for the edit-test loop: ruff, mypy, then the unit and server-level tests
# without browsers, WebRTC media, the speech recognizer or long waits (marker `slow`),
# spread over every core. Extra arguments go to pytest.
exec "$(dirname "$0")/test.sh" -n auto -m "not browser and not media and not speech and not slow" "$@"
