"""deploy/nats/nats.conf is generated from the events every service declares (tools/nats_config.py):
these fail when the file drifts from the code, so a new consumer never ships without its permission
and a removed one never leaves a permission nobody uses."""

from __future__ import annotations

import re
import subprocess

import yaml

from libs.common.streams import stream_services
from tools import events_catalogue, nats_config
from tools.devstack import nats_password_variable, nats_users
from tools.events_catalogue import Subscriber


def rendered() -> str:
    return nats_config.render(events_catalogue.load(), stream_services())


def test_nats_conf_and_its_k8s_copy_are_generated_from_the_declarations() -> None:
    for path, text in nats_config.expected().items():
        assert path.read_text() == text, f"{path.name} is out of date: run `python -m tools.nats_config`"


def test_the_k8s_configmap_carries_the_same_files() -> None:
    data = yaml.safe_load(nats_config.K8S_CONFIGMAP.read_text())["data"]
    assert data["nats.conf"] == nats_config.NATS_CONF.read_text()
    assert data["start.sh"] == nats_config.START_SCRIPT.read_text()


def test_a_new_consumer_gets_its_permission_and_a_removed_one_loses_it() -> None:
    catalogue = events_catalogue.load()
    booking = next(entry for entry in catalogue if entry.service == "booking")
    lead_created = next(e for e in booking.published if e.subject == "cws.booking.lead.created")
    jobs = next(entry for entry in catalogue if entry.service == "jobs")
    jobs.subscribers.append(Subscriber("jobs", "durable", "jobs-lead-created", lead_created, "x"))
    added = nats_config.render(catalogue, stream_services())
    assert added != rendered()
    assert '"$JS.API.CONSUMER.CREATE.CWS_BOOKING.jobs-lead-created.cws.booking.lead.created"' in added
    assert '"$JS.API.CONSUMER.MSG.NEXT.CWS_BOOKING.jobs-lead-created"' in added

    catalogue = events_catalogue.load()
    notify = next(entry for entry in catalogue if entry.service == "notify")
    notify.subscribers = [s for s in notify.subscribers if s.name != "notify-lead-created"]
    removed = nats_config.render(catalogue, stream_services())
    assert "notify-lead-created" in rendered() and "notify-lead-created" not in removed


def test_every_user_has_a_password_variable_and_nobody_is_anonymous() -> None:
    text = nats_config.NATS_CONF.read_text()
    users = nats_users()
    assert users[0] == "admin" and users[-1] == "events_reader"
    assert set(users) >= {"iam", "booking", "notify", "jobs", "gateway"}
    assert re.findall(r"password: \$(\S+)", text) == [nats_password_variable(user) for user in users]
    assert not re.search(r"^\s*no_auth_user", text, re.MULTILINE)
    # Only admin subscribes outside its own inbox, and only the service itself publishes its events.
    for user in nats_config.users(events_catalogue.load(), stream_services()):
        if user.unrestricted:
            assert user.name == "admin"
            continue
        assert [g.subject for g in user.subscribe] == [f"_INBOX_{user.name}.>"]
        own = [g.subject for g in user.publish if g.subject.startswith("cws.")]
        assert own in ([], [f"cws.{user.name}.>"]), (user.name, own)
        assert not any(
            g.subject.startswith(("$JS.API.STREAM.CREATE", "$JS.API.STREAM.UPDATE")) for g in user.publish
        )


def test_the_start_script_refuses_an_unset_or_short_password(tmp_path) -> None:
    """nats-server reads an empty variable as an empty password (a user anyone may be): refused first."""
    env = {nats_password_variable(user): "x" * 32 for user in nats_users()}
    env["NATS_IAM_PASSWORD"] = ""
    done = subprocess.run(
        ["sh", str(nats_config.START_SCRIPT)],
        env={**env, "PATH": "/usr/bin:/bin", "NATS_CONF": str(nats_config.NATS_CONF)},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert done.returncode == 1 and "NATS_IAM_PASSWORD must be set" in done.stderr, done.stderr


def _env(container: dict) -> dict[str, object]:
    """name -> its literal value or the secret key it reads (a field reference is left as None)."""
    return {
        e["name"]: e.get("value") or e.get("valueFrom", {}).get("secretKeyRef", {}).get("key")
        for e in container.get("env", [])
    }


def test_compose_and_kubernetes_give_each_process_its_own_nats_user() -> None:
    """The nats server gets every user's password, each process only its own: in compose and k8s."""
    variables = {nats_password_variable(user) for user in nats_users()}
    k8s = nats_config.ROOT / "deploy" / "k8s"
    [statefulset, _] = yaml.safe_load_all((k8s / "nats.yaml").read_text())
    assert set(_env(statefulset["spec"]["template"]["spec"]["containers"][0])) == variables
    processes = ["iam", "booking", "notify", "jobs", "gateway"]
    for name in processes:
        deployment = next(yaml.safe_load_all((k8s / f"{name}.yaml").read_text()))
        env = _env(deployment["spec"]["template"]["spec"]["containers"][0])
        assert (env["NATS_USER"], env["NATS_PASSWORD"]) == (name, nats_password_variable(name)), name
    job = yaml.safe_load((k8s / "streams-job.yaml").read_text())
    assert _env(job["spec"]["template"]["spec"]["containers"][0]) == {
        "NATS_USER": "admin",
        "NATS_PASSWORD": "NATS_ADMIN_PASSWORD",
    }
    resources = yaml.safe_load((k8s / "kustomization.yaml").read_text())["resources"]
    assert {"nats-config.yaml", "nats.yaml", "streams-job.yaml"} <= set(resources)

    compose = yaml.safe_load((nats_config.ROOT / "docker-compose.yml").read_text())
    assert set(compose["x-nats-passwords"]) == variables == set(compose["x-no-nats-passwords"])
    services = compose["services"]
    for name in processes:
        env = services[name]["environment"]
        assert env["NATS_USER"] == name and env["NATS_PASSWORD"] == f"${{{nats_password_variable(name)}:-}}"
        # .env reaches every container: every other password is blanked.
        assert all(env[v] == "" for v in variables), name
    assert services["streams"]["environment"]["NATS_USER"] == "admin"
