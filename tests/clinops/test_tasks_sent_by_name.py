"""A service that sends its own app's task names it (clinops.base.tasks.task_named); every such name is
a task registered once the apps are loaded, in any process, with its own options."""
import ast
from pathlib import Path

import pytest
from celery import current_app

from clinops.base.tasks import task_named

ROOT = Path(__file__).resolve().parents[2]


def names_sent_by_name() -> set[str]:
    """Every task name passed to task_named in the apps' code (a literal, or a module constant)."""
    names = set()
    for path in [p for app in ("clinops", "patients", "monitoring", "therapy") for p in (ROOT / app).rglob("*.py")]:
        tree = ast.parse(path.read_text())
        constants = {t.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                     and isinstance(node.value, ast.Constant) for t in node.targets if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "task_named" and node.args:
                arg = node.args[0]
                names.add(arg.value if isinstance(arg, ast.Constant) else constants[arg.id])
    return names


def test_the_services_send_these_tasks_by_name():
    assert names_sent_by_name() == {"monitoring.tasks.process_window", "monitoring.tasks.process_windows",
                                    "monitoring.tasks.estimate_windows", "therapy.tasks.evaluate_patient"}


@pytest.mark.parametrize("name", sorted(names_sent_by_name()))
def test_each_name_is_a_registered_task_with_its_options(name):
    task = task_named(name)
    assert task is current_app.tasks[name] and task.name == name
    assert task.ignore_result  # no result channel subscribed for each send


def test_an_unknown_name_fails_at_once():
    with pytest.raises(KeyError):
        task_named("monitoring.tasks.no_such_task")
