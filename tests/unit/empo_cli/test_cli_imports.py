"""The `empo` command imports every command module plainly (empo_cli.main); what keeps `empo --help`,
`empo crd`, `empo validate` and `empo plan` light is that no command module imports torch, Ray,
vLLM, kopf or the Kubernetes client at import time: they load inside run(). The operator image has
no torch at all and still runs `empo`."""

import json
import subprocess
import sys

HEAVY = ("torch", "ray", "vllm", "transformers", "datasets", "trl", "accelerate", "sentence_transformers",
         "boto3", "botocore", "kopf", "kubernetes", "numpy", "sympy", "math_verify", "matplotlib", "pyarrow",
         "mlflow", "wandb", "tensorboard", "prometheus_client")


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_importing_the_command_line_loads_no_heavy_package():
    loaded = _loaded_after("import empo_cli.main")
    assert not [m for m in HEAVY if m in loaded]


def test_help_lists_every_command_and_loads_no_heavy_package():
    from empo_cli.main import COMMANDS

    code = ("import contextlib, io\nfrom empo_cli.main import main\nbuf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):\n    main(['--help'])\n"
            "assert all(name in buf.getvalue() for name in %r), buf.getvalue()" % sorted(COMMANDS))
    loaded = _loaded_after(code)
    assert not [m for m in HEAVY if m in loaded]


def test_every_command_module_has_the_dispatchers_interface():
    from empo_cli.main import COMMANDS

    for name, (module, help_text) in COMMANDS.items():
        assert callable(module.add_arguments) and callable(module.run), name
        assert help_text, name
