"""What a held test passes on to the fresh processes that confirm it."""

from __future__ import annotations

from pytest_efficientllm.glue.holding import plugin_args


def test_the_plugins_a_command_line_names_are_passed_on_in_order_and_nothing_else() -> None:
    args = ["-k", "decode", "-p", "no:cacheprovider", "tests/", "-pno:randomly", "-x", "--pdb", "-n", "2"]
    assert plugin_args(args) == ("no:cacheprovider", "no:randomly")
    assert plugin_args(["tests/", "-p", "myplugin"]) == ("myplugin",)
    assert plugin_args(["tests/", "-v"]) == ()
