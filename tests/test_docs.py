"""The README documents what the code does: every setting appears in its configuration table."""

from __future__ import annotations

from server.settings import SETTINGS_SPEC
from tests.support.server import PROJECT_ROOT


def test_readme_configuration_table_lists_every_setting():
    readme = (PROJECT_ROOT / "README.md").read_text()
    for spec in SETTINGS_SPEC:
        flag = "--" + spec.name.replace("_", "-")
        assert f"`{flag}` | `{spec.metadata['env']}`" in readme, flag


def test_ci_runs_the_readme_test_command():
    readme = (PROJECT_ROOT / "README.md").read_text()
    ci = (PROJECT_ROOT / ".ci" / "run").read_text()
    assert "scripts/test.sh" in readme and "scripts/test.sh" in ci
