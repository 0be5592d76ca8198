#!/usr/bin/env python3
"""Checks on rendered Leadflow manifests that a schema cannot make.

Usage: check-manifests.py <kustomization dir>=<rendered yaml> ...  (run by deploy/validate.sh)

The schemas (kubernetes-validate) say each object is well-formed; this says the objects fit
together and follow the deployment rules of deploy/README.md: every reference resolves (Service
selectors and target ports, ConfigMaps, Secrets and their keys, HPA and PDB targets, in-cluster
URLs), every workload is hardened and bounded, every Leadflow service has its gRPC probes on its
gRPC port, its settings are real settings of the code, the dev overlay runs one replica on its own
PostgreSQL, production runs at least two and commits no secret, the collector's pipelines are
complete, and deploy/README.md documents every environment variable the services read.
"""

import base64
import functools
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
LEADFLOW_SERVICES = ("ingestion", "scoring", "qualification", "handoff")

errors = []


def fail(where, message):
    errors.append(f"{where}: {message}")


@functools.cache
def code_env_vars():
    """Every environment variable a service reads: the clap `env = "..."` names in the service
    crates and the runtime they share (not the CLI's, not `leadflow up`'s)."""
    names = set()
    for crate in LEADFLOW_SERVICES + ("runtime",):
        for path in sorted((ROOT / "crates" / crate / "src").glob("**/*.rs")):
            names.update(re.findall(r'\benv\s*=\s*"([A-Z][A-Z0-9_]*)"', path.read_text()))
    return names


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_templates(objects):
    """(workload, pod template) for every Deployment and StatefulSet."""
    return [
        (o, o["spec"]["template"])
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet")
    ]


def config_data(objects, name):
    for o in objects:
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name:
            return o.get("data", {})
    return None


def secret_data(objects, name):
    for o in objects:
        if o["kind"] == "Secret" and o["metadata"]["name"] == name:
            data = {k: base64.b64decode(v).decode() for k, v in o.get("data", {}).items()}
            data.update(o.get("stringData", {}))
            return data
    return None


def check_workload(where, objects, workload, external_secrets):
    """Hardening, bounds, probes and references of one Deployment or StatefulSet."""
    spec = workload["spec"]["template"]["spec"]
    pod_sc = spec.get("securityContext", {})
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    volumes.update({c["metadata"]["name"]: c for c in workload["spec"].get("volumeClaimTemplates", [])})
    if spec.get("automountServiceAccountToken") is not False:
        fail(where, "automountServiceAccountToken must be false")
    for c in spec["containers"] + spec.get("initContainers", []):
        cw = f"{where} container {c['name']}"
        sc = c.get("securityContext", {})
        if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
            fail(cw, "runAsNonRoot is not set")
        if sc.get("readOnlyRootFilesystem") is not True:
            fail(cw, "readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(cw, "allowPrivilegeEscalation must be false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            fail(cw, "capabilities must drop ALL")
        seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}
        if seccomp.get("type") != "RuntimeDefault":
            fail(cw, "seccompProfile must be RuntimeDefault")
        image = c.get("image", "")
        if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
            fail(cw, f"image {image!r} must be pinned to a tag")
        resources = c.get("resources", {})
        for kind in ("requests", "limits"):
            for res in ("cpu", "memory"):
                if res not in resources.get(kind, {}):
                    fail(cw, f"resources.{kind}.{res} is missing")
        if c in spec["containers"]:
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in c:
                    fail(cw, f"{probe} is missing")
        for mount in c.get("volumeMounts", []):
            if mount["name"] not in volumes:
                fail(cw, f"volume {mount['name']!r} is mounted but not declared")
        for source in c.get("envFrom", []):
            if "configMapRef" in source:
                ref = source["configMapRef"]
                if config_data(objects, ref["name"]) is None and not ref.get("optional"):
                    fail(cw, f"ConfigMap {ref['name']!r} is not in the render")
        for env in c.get("env", []):
            ref = env.get("valueFrom", {})
            if "configMapKeyRef" in ref:
                r = ref["configMapKeyRef"]
                data = config_data(objects, r["name"])
                if (data is None or r["key"] not in data) and not r.get("optional"):
                    fail(cw, f"{env['name']}: ConfigMap key {r['name']}/{r['key']} is not in the render")
            if "secretKeyRef" in ref:
                r = ref["secretKeyRef"]
                data = secret_data(objects, r["name"])
                if data is None:
                    if not external_secrets:
                        fail(cw, f"{env['name']}: Secret {r['name']!r} is not in the render")
                elif r["key"] not in data and not r.get("optional"):
                    fail(cw, f"{env['name']}: Secret {r['name']!r} has no key {r['key']!r}")
    for name, volume in volumes.items():
        if "configMap" in volume and config_data(objects, volume["configMap"]["name"]) is None:
            fail(where, f"volume {name}: ConfigMap {volume['configMap']['name']!r} is not in the render")


def check_leadflow_deployment(where, objects, deployment, overlay):
    """The rules every Leadflow service Deployment follows."""
    name = deployment["metadata"]["name"]
    service = name.removeprefix("leadflow-")
    where = f"{where} Deployment {name}"
    if service not in LEADFLOW_SERVICES:
        fail(where, f"unknown Leadflow service {service!r}")
        return
    upper = service.upper()
    template = deployment["spec"]["template"]
    spec = template["spec"]
    labels = template["metadata"].get("labels", {})
    if len(spec["containers"]) != 1:
        fail(where, "a service pod runs exactly one container")
        return
    c = spec["containers"][0]
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    grpc_port = ports.get("grpc")
    if grpc_port is None:
        fail(where, "no container port named grpc")
        return
    if not c["image"].startswith(f"ghcr.io/leadflow/leadflow-{service}:"):
        fail(where, f"image {c['image']!r} is not ghcr.io/leadflow/leadflow-{service}")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        grpc = c.get(probe, {}).get("grpc")
        if not grpc or grpc.get("port") != grpc_port:
            fail(where, f"{probe} must be a native gRPC probe on port {grpc_port}")
        elif grpc.get("service", "") not in ("", f"leadflow.{service}.v1.{service.title()}Service"):
            fail(where, f"{probe} asks for an unknown gRPC service {grpc['service']!r}")
    if not any(
        m.get("mountPath") == "/tmp" and spec_volume_is_emptydir(spec, m["name"])
        for m in c.get("volumeMounts", [])
    ):
        fail(where, "/tmp must be an emptyDir")
    spread = spec.get("topologySpreadConstraints", [])
    if not spread:
        fail(where, "no topologySpreadConstraints")
    for constraint in spread:
        if not matches(constraint.get("labelSelector", {}).get("matchLabels", {}), labels):
            fail(where, f"topology spread on {constraint['topologyKey']} does not select its own pods")

    env = {e["name"]: e for e in c.get("env", [])}
    db = env.get(f"LEADFLOW_{upper}_DATABASE_URL", {}).get("valueFrom", {}).get("secretKeyRef")
    if not db or db.get("key") != "database-url" or db.get("optional"):
        fail(where, f"LEADFLOW_{upper}_DATABASE_URL must come from a Secret's database-url key")
    for var, key in (("LEADFLOW_API_KEYS", "api-keys"), ("LEADFLOW_INTERNAL_KEY", "internal-key")):
        ref = env.get(var, {}).get("valueFrom", {}).get("secretKeyRef")
        if not ref or ref.get("key") != key:
            fail(where, f"{var} must come from a Secret's {key} key")
        elif overlay == "prod" and ref.get("optional"):
            fail(where, f"{var} may not be optional in production")
    config = {}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            config.update(config_data(objects, source["configMapRef"]["name"]) or {})
    known = code_env_vars()
    for key in config:
        if key not in known and not key.startswith("OTEL_"):
            fail(where, f"ConfigMap key {key} is not an environment variable any service reads")
    for key in env:
        if key.startswith("LEADFLOW_") and key not in known:
            fail(where, f"env {key} is not an environment variable any service reads")
    if config.get(f"LEADFLOW_{upper}_LISTEN_ADDR") != f"0.0.0.0:{grpc_port}":
        fail(where, f"LEADFLOW_{upper}_LISTEN_ADDR must be 0.0.0.0:{grpc_port}")
    metrics = config.get("LEADFLOW_METRICS_ADDR", "")
    if metrics and ports.get("metrics") != int(metrics.rsplit(":", 1)[-1]):
        fail(where, f"LEADFLOW_METRICS_ADDR {metrics} is not the container's metrics port")
    if not config.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").startswith("http://"):
        fail(where, "OTEL_EXPORTER_OTLP_ENDPOINT must be set (plain-text OTLP/gRPC)")
    if overlay in ("dev", "prod"):
        for key, value in config.items():
            url = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", value)
            if key.endswith(("_URL", "_ENDPOINT")) and url and not any(
                o["kind"] == "Service"
                and o["metadata"]["name"] == url[1]
                and any(p["port"] == int(url[2]) for p in o["spec"]["ports"])
                for o in objects
            ):
                fail(where, f"{key}={value} names no Service port in the render")

    services = [
        o for o in objects
        if o["kind"] == "Service" and matches(o["spec"].get("selector", {}), labels)
    ]
    if not any(
        p["port"] == grpc_port and p.get("appProtocol") == "grpc"
        for s in services for p in s["spec"]["ports"]
    ):
        fail(where, f"no Service exposes port {grpc_port} with appProtocol grpc")
    if not any(
        o["kind"] == "PodDisruptionBudget" and matches(o["spec"]["selector"].get("matchLabels", {}), labels)
        for o in objects
    ):
        fail(where, "no PodDisruptionBudget")
    hpas = [
        o for o in objects
        if o["kind"] == "HorizontalPodAutoscaler" and o["spec"]["scaleTargetRef"]["name"] == name
    ]
    if overlay == "dev":
        if deployment["spec"].get("replicas") != 1 or hpas:
            fail(where, "the dev overlay runs exactly one replica, without autoscaling")
    else:
        if len(hpas) != 1:
            fail(where, "needs exactly one HorizontalPodAutoscaler")
        elif overlay == "prod" and hpas[0]["spec"].get("minReplicas", 1) < 2:
            fail(where, "production runs at least two replicas")
        if "replicas" in deployment["spec"]:
            fail(where, "replicas is set although an HPA owns the count")
    if overlay == "prod":
        res = c["resources"]
        if res["requests"]["memory"] != res["limits"]["memory"]:
            fail(where, "production memory request and limit must be equal")


def spec_volume_is_emptydir(spec, name):
    return any(v["name"] == name and "emptyDir" in v for v in spec.get("volumes", []))


def check_references(where, objects):
    templates = pod_templates(objects)
    for o in objects:
        kind, name = o["kind"], o["metadata"]["name"]
        if kind == "Service":
            selector = o["spec"].get("selector", {})
            pods = [t for _, t in templates if matches(selector, t["metadata"].get("labels", {}))]
            if not pods:
                fail(where, f"Service {name} selects no pods")
            for port in o["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                if not any(
                    target in (p.get("name"), p["containerPort"])
                    for t in pods for c in t["spec"]["containers"] for p in c.get("ports", [])
                ):
                    fail(where, f"Service {name} port {port.get('name')} targets no container port")
        elif kind == "PodDisruptionBudget":
            selector = o["spec"]["selector"].get("matchLabels", {})
            if not any(matches(selector, t["metadata"].get("labels", {})) for _, t in templates):
                fail(where, f"PodDisruptionBudget {name} selects no pods")
        elif kind == "HorizontalPodAutoscaler":
            ref = o["spec"]["scaleTargetRef"]
            if not any(w["kind"] == ref["kind"] and w["metadata"]["name"] == ref["name"] for w, _ in templates):
                fail(where, f"HorizontalPodAutoscaler {name} targets a missing {ref['kind']} {ref['name']}")
        elif kind in ("Deployment", "StatefulSet"):
            selector = o["spec"]["selector"].get("matchLabels", {})
            if not matches(selector, o["spec"]["template"]["metadata"].get("labels", {})):
                fail(where, f"{kind} {name}: selector does not match its pod template")
            sa = o["spec"]["template"]["spec"].get("serviceAccountName")
            if sa and not any(x["kind"] == "ServiceAccount" and x["metadata"]["name"] == sa for x in objects):
                fail(where, f"{kind} {name}: ServiceAccount {sa} is not in the render")


def check_dev(where, objects):
    statefulsets = [o for o in objects if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "postgres"]
    if len(statefulsets) != 1:
        fail(where, "the dev overlay needs one PostgreSQL StatefulSet named postgres")
        return
    pg = statefulsets[0]["spec"]["template"]["spec"]
    if not pg["containers"][0]["image"].startswith("postgres:17"):
        fail(where, "PostgreSQL must be postgres:17")
    init = next(
        (v["configMap"]["name"] for v in pg.get("volumes", [])
         if "configMap" in v and any(
             m["name"] == v["name"] and m["mountPath"] == "/docker-entrypoint-initdb.d"
             for m in pg["containers"][0].get("volumeMounts", []))),
        None,
    )
    sql = "\n".join((config_data(objects, init) or {}).values()) if init else ""
    created = set(re.findall(r"CREATE DATABASE (\w+)", sql))
    internal_keys = set()
    for service in LEADFLOW_SERVICES:
        # The Secret the Deployment reads (generated Secrets carry a hash suffix).
        deployment = next(
            (o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == f"leadflow-{service}"),
            None,
        )
        if deployment is None:
            continue
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])}
        ref = env.get(f"LEADFLOW_{service.upper()}_DATABASE_URL", {}).get("valueFrom", {}).get("secretKeyRef", {})
        secret = secret_data(objects, ref.get("name", ""))
        if secret is None:
            fail(where, f"no Secret for leadflow-{service}")
            continue
        url = secret.get("database-url", "")
        database = url.rsplit("/", 1)[-1]
        if not url.startswith("postgres://") or database not in created:
            fail(where, f"leadflow-{service}: database {database!r} is not created by the init script")
        internal_keys.add(secret.get("internal-key"))
    if len(internal_keys) > 1:
        fail(where, "every service must share the same internal-key")


def check_collector(where, objects):
    data = config_data(objects, "otel-collector-config")
    if data is None:
        fail(where, "no otel-collector-config ConfigMap")
        return
    config = yaml.safe_load(data["config.yaml"])
    if "otlp" not in config.get("receivers", {}):
        fail(where, "the collector must receive OTLP")
    pipelines = config.get("service", {}).get("pipelines", {})
    if "traces" not in pipelines:
        fail(where, "the collector has no traces pipeline")
    for pipeline, parts in pipelines.items():
        for section in ("receivers", "processors", "exporters"):
            for component in parts.get(section, []):
                if component not in config.get(section, {}):
                    fail(where, f"pipeline {pipeline} uses undefined {section[:-1]} {component}")
        if not parts.get("receivers") or not parts.get("exporters"):
            fail(where, f"pipeline {pipeline} needs receivers and exporters")
    for extension in config.get("service", {}).get("extensions", []):
        if extension not in config.get("extensions", {}):
            fail(where, f"undefined extension {extension}")


def check_render(target, path):
    where = target
    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    seen = set()
    for o in docs:
        key = (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])
        if key in seen:
            fail(where, f"{key} appears twice")
        seen.add(key)
    overlay = "dev" if target.endswith("overlays/dev") else "prod" if target.endswith("overlays/prod") else "base"
    external_secrets = overlay != "dev"
    if overlay != "dev" and any(o["kind"] == "Secret" for o in docs):
        fail(where, "no Secret may be committed outside the dev overlay")
    check_references(where, docs)
    for workload, _ in pod_templates(docs):
        check_workload(f"{where} {workload['kind']} {workload['metadata']['name']}", docs, workload, external_secrets)
    leadflow = [
        o for o in docs
        if o["kind"] == "Deployment" and o["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "leadflow"
    ]
    for deployment in leadflow:
        check_leadflow_deployment(where, docs, deployment, overlay)
    if "/k8s/base/" in target + "/" and len(leadflow) != 1:
        fail(where, "a base holds exactly one Leadflow service")
    if overlay in ("dev", "prod"):
        names = sorted(d["metadata"]["name"] for d in leadflow)
        if names != sorted(f"leadflow-{s}" for s in LEADFLOW_SERVICES):
            fail(where, f"the overlay must run all four services, found {names}")
    if overlay == "dev":
        check_dev(where, docs)
    if any(o["kind"] == "ConfigMap" and o["metadata"]["name"] == "otel-collector-config" for o in docs):
        check_collector(where, docs)
    return len(docs)


def check_docs():
    readme = (ROOT / "deploy" / "README.md").read_text()
    for name in sorted(code_env_vars()):
        if f"`{name}`" not in readme:
            fail("deploy/README.md", f"environment variable {name} is not documented")


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    for arg in argv:
        target, path = arg.split("=", 1)
        count = check_render(target, path)
        print(f"checked {target}: {count} objects")
    check_docs()
    for error in errors:
        print(f"ERROR {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
