"""Cross-references in docker-compose.yml that `docker-compose config` does not check:
Prometheus scrapes every consumer and the retrainer by a name the compose network
resolves, Alertmanager calls the retrainer with the token file the retrainer reads,
Grafana's dashboard provider reads the folder the dashboards are mounted at, and every
consumer has its own static member id, and no port is published on every interface
(the demo's services have demo credentials: they listen on the loopback only).

Run with the kubernetes-validate venv's Python (it has PyYAML):
    "$(dirname "$(bash scripts/install-kubernetes-validate.sh)")/python" scripts/check-compose-refs.py
"""
import sys

import yaml

compose = yaml.safe_load(open("docker-compose.yml"))
services = compose["services"]
prometheus = yaml.safe_load(open("deploy/compose/prometheus.yml"))
alertmanager = yaml.safe_load(open("deploy/compose/alertmanager.yml"))
provider = yaml.safe_load(open("grafana/provisioning/dashboards/triage.yml"))
problems = []


def need(ok, message):
    if not ok:
        problems.append(message)


def names(service):
    return {service, services[service].get("hostname", service)}


def mounts(service):
    """container path -> source, for the service's volumes."""
    out = {}
    for v in services[service].get("volumes", []):
        source, target = v.split(":")[:2]
        out[target] = source
    return out


def env(service):
    return services[service].get("environment", {})


consumers = [s for s in services if services[s].get("command") == ["run"]]
need(len(consumers) >= 2, f"consumers (command: run): {consumers}")
hostnames = [services[s].get("hostname") for s in consumers]
need(None not in hostnames and len(set(hostnames)) == len(hostnames), f"each consumer needs its own hostname (its static member id): {hostnames}")
for s in consumers:
    need(env(s).get("TRIAGE__KAFKA__GROUP_INSTANCE_ID") == "{hostname}", f"{s}: kafka.group_instance_id is not {{hostname}}")

# Prometheus: the triage job scrapes every consumer, the retrainer job the retrainer.
jobs = {j["job_name"]: [t for c in j["static_configs"] for t in c["targets"]] for j in prometheus["scrape_configs"]}
want = {f"{services[s]['hostname']}:9464" for s in consumers}
need(set(jobs.get("triage", [])) == want, f"Prometheus's triage job scrapes {jobs.get('triage')}, the consumers are {sorted(want)}")
need(jobs.get("triage-retrainer") == ["retrainer:9465"] and "retrainer" in names("retrainer"), "Prometheus does not scrape the retrainer at retrainer:9465")
am_targets = [t for a in prometheus["alerting"]["alertmanagers"] for c in a["static_configs"] for t in c["targets"]]
need(am_targets == ["alertmanager:9093"] and "alertmanager" in services, f"Prometheus sends alerts to {am_targets}")
need(mounts("prometheus").get("/etc/prometheus/rules") == "./deploy/prometheus/rules", "Prometheus does not mount deploy/prometheus/rules at /etc/prometheus/rules")

# Alertmanager: the webhook goes to the retrainer with the token file both mount.
hooks = [w for r in alertmanager["receivers"] for w in r.get("webhook_configs", [])]
need(len(hooks) == 1, f"webhooks: {hooks}")
for hook in hooks:
    need(hook["url"] == "http://retrainer:9465/v1/alerts", f"Alertmanager calls {hook['url']}")
    token = hook["http_config"]["authorization"]["credentials_file"]
    need(env("retrainer").get("TRIAGE__RETRAIN__WEBHOOK_TOKEN_FILE") == token, f"the retrainer reads its token elsewhere than {token}")
    for s in ["alertmanager", "retrainer", "webhook-token"]:
        folders = {t: src for t, src in mounts(s).items() if token.startswith(t + "/")}
        need(folders and set(folders.values()) == {"webhook-token"}, f"{s} does not mount the webhook-token volume where {token} is")

# Grafana: the provider reads where the dashboards are mounted.
path = provider["providers"][0]["options"]["path"]
need(mounts("grafana").get(path) == "./grafana/dashboards", f"Grafana's dashboard provider reads {path}, grafana/dashboards is mounted elsewhere")
need(mounts("grafana").get("/etc/grafana/provisioning") == "./grafana/provisioning", "Grafana does not mount grafana/provisioning")
need(env("grafana").get("TRIAGE_PROMETHEUS_URL") == "http://prometheus:9090", "Grafana's datasource URL is not http://prometheus:9090")

# Published ports: on the loopback only. "PORT", "HOST_PORT:PORT" and "0.0.0.0:..."
# listen on every interface; exposing a service is a deliberate edit of this list.
EXPOSED_ON_PURPOSE = set()
for name, service in services.items():
    for port in service.get("ports", []):
        if isinstance(port, dict):
            host_ip = port.get("host_ip", "")
        else:
            parts = str(port).rsplit(":", 2)
            host_ip = parts[0] if len(parts) == 3 else ""
        need(
            host_ip in ("127.0.0.1", "::1", "[::1]") or (name, str(port)) in EXPOSED_ON_PURPOSE,
            f"{name}: port {port!r} is published on every interface; bind it to 127.0.0.1 "
            f"(\"127.0.0.1:{port}\") or, deliberately, add it to EXPOSED_ON_PURPOSE",
        )

for p in problems:
    print(f"check-compose-refs: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
