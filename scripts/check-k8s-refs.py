"""Cross-references between the manifests in deploy/k8s that no schema checks: the
custom resources (ServiceMonitor, ScaledObject) and the workloads must name the same
Services, ports, labels, StatefulSet, consumer group, topic and Secrets.

Run with the kubernetes-validate venv's Python (it has PyYAML):
    "$(dirname "$(bash scripts/install-kubernetes-validate.sh)")/python" scripts/check-k8s-refs.py
"""
import glob
import re
import sys

import yaml

docs = [d for f in sorted(glob.glob("deploy/k8s/*.yaml")) for d in yaml.safe_load_all(open(f)) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
problems = []


def need(ok, message):
    if not ok:
        problems.append(message)


def one(kind, name):
    found = [d for d in by_kind.get(kind, []) if d["metadata"]["name"] == name]
    need(found, f"no {kind} named {name}")
    return found[0] if found else {}


config = one("ConfigMap", "triage-config")
toml = config.get("data", {}).get("triage.toml", "")
group = re.search(r'^group_id = "([^"]+)"', toml, re.M)
topics = re.search(r'^input_topics = \["([^"]+)"', toml, re.M)
brokers = re.search(r'^brokers = "([^"]+)"', toml, re.M)

# The ServiceMonitor scrapes the run and retrainer Services by label and port name.
monitor = one("ServiceMonitor", "triage")
selector = monitor.get("spec", {}).get("selector", {})
port = monitor.get("spec", {}).get("endpoints", [{}])[0].get("port")
wanted = {"triage-run", "triage-retrainer"}
for service in by_kind.get("Service", []):
    labels = service["metadata"].get("labels", {})
    selected = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()) and all(
        labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", [])
    )
    name = service["metadata"]["name"]
    if name in wanted:
        need(selected, f"the ServiceMonitor does not select Service {name}")
        need(any(p.get("name") == port for p in service["spec"]["ports"]), f"Service {name} has no port named {port}")
    else:
        need(not selected, f"the ServiceMonitor also selects Service {name} (its pods would be scraped twice)")

# Each workload's Service selects its pods, and the pods expose the named port.
for kind, name, service in [("StatefulSet", "triage-run", "triage-run"), ("Deployment", "triage-retrainer", "triage-retrainer")]:
    workload = one(kind, name)
    pod_labels = workload.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
    svc = one("Service", service)
    need(all(pod_labels.get(k) == v for k, v in svc.get("spec", {}).get("selector", {}).items()), f"Service {service} does not select the {kind}'s pods")
    containers = workload.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [{}])
    need(any(p.get("name") == port for p in containers[0].get("ports", [])), f"{kind} {name} exposes no port named {port}")
    for ref in containers[0].get("envFrom", []):
        one("Secret", ref["secretRef"]["name"])
    for volume in workload.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", []):
        if "secret" in volume:
            one("Secret", volume["secret"]["secretName"])
        if "configMap" in volume:
            one("ConfigMap", volume["configMap"]["name"])
statefulset = one("StatefulSet", "triage-run")
one("Service", statefulset.get("spec", {}).get("serviceName", ""))

# KEDA scales that StatefulSet on that group's lag on that topic.
scaled = one("ScaledObject", "triage-run")
target = scaled.get("spec", {}).get("scaleTargetRef", {})
need((target.get("kind"), target.get("name")) == ("StatefulSet", "triage-run"), f"the ScaledObject targets {target}")
for trigger in scaled.get("spec", {}).get("triggers", []):
    meta = trigger.get("metadata", {})
    need(group and meta.get("consumerGroup") == group.group(1), "the ScaledObject's consumerGroup is not the ConfigMap's kafka.group_id")
    need(topics and meta.get("topic") == topics.group(1), "the ScaledObject's topic is not the ConfigMap's first kafka.input_topics")
    need(brokers and meta.get("bootstrapServers") == brokers.group(1), "the ScaledObject's bootstrapServers are not the ConfigMap's kafka.brokers")

for p in problems:
    print(f"check-k8s-refs: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
