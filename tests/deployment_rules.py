"""Static checks of docker-compose.yml, .env.example and the Dockerfile (no Docker needed).

Each rule is a function returning a list of problems (empty = fine), so that tests can run it both on the real
files and on small bad examples proving it catches what it is meant to catch.
"""

from __future__ import annotations

import json
import re
import shlex
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

Compose = dict[str, Any]
Service = dict[str, Any]

ONE_SHOT = "service_completed_successfully"
# Wait for a long-running service to be healthy, or for a one-shot service to have exited 0.
CONDITIONS = {"service_healthy", ONE_SHOT}

# ---- .env files and compose interpolation -----------------------------------------------------------------

_ASSIGNMENT = re.compile(r"^\s*(#\s*)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


def parse_env_file(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """(active assignments, commented-out example assignments such as '# MONGO_PASSWORD=change-me')."""
    active: dict[str, str] = {}
    commented: dict[str, str] = {}
    for line in text.splitlines():
        match = _ASSIGNMENT.match(line)
        if not match:
            continue
        value = match[3].strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        (commented if match[1] else active)[match[2]] = value
    return active, commented


_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<plain>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\})"
)


class InterpolationError(ValueError):
    pass


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution: $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error},
    ${VAR:+alternative}, and $$ for a literal $."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["plain"] or match["name"]
        value = env.get(name)
        op, arg = match["op"], match["arg"] or ""
        # With a colon, an empty value counts as unset.
        present = bool(value) if op and op.startswith(":") else value is not None
        if op in (":-", "-"):
            return value if present and value is not None else arg
        if op in (":?", "?"):
            if not present:
                raise InterpolationError(f"${{{name}}} is required: {arg}")
            return value or ""
        if op in (":+", "+"):
            return arg if present else ""
        return value or ""

    if re.search(r"\$\{[^}]*$", text):
        raise InterpolationError(f"unterminated ${{ in {text!r}")
    return _VARIABLE.sub(substitute, text)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    return node


def service_env(service: Service) -> dict[str, str | None]:
    """A service's `environment` (mapping or list form) as strings; None = passed through from the host."""
    raw = service.get("environment") or {}
    env: dict[str, str | None] = {}
    if isinstance(raw, list):
        for item in raw:
            name, sep, value = str(item).partition("=")
            env[name] = value if sep else None
        return env
    for name, value in raw.items():
        if value is None:
            env[name] = None
        elif isinstance(value, bool):
            env[name] = "true" if value else "false"
        else:
            env[name] = str(value)
    return env


# ---- images ------------------------------------------------------------------------------------------------

_PATCH_VERSION = re.compile(r"\d+\.\d+\.\d+")


def image_pin_problem(image: str) -> str | None:
    """None if the image reference is pinned: a digest, or a tag naming a full x.y.z version."""
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"{image!r} has no tag (means latest)"
    tag = last.split(":", 1)[1]
    if tag == "latest" or "latest" in tag.split("-"):
        return f"{image!r} uses a latest tag"
    if not _PATCH_VERSION.search(tag):
        return f"{image!r} is not pinned to a patch version (x.y.z)"
    return None


def image_problems(services: Mapping[str, Service]) -> list[str]:
    problems = []
    for name, service in services.items():
        image = service.get("image")
        if image is None:
            if "build" not in service:
                problems.append(f"{name}: neither image nor build")
            continue
        problem = image_pin_problem(str(image))
        if problem:
            problems.append(f"{name}: {problem}")
    return problems


# ---- dependencies and health -------------------------------------------------------------------------------


def one_shot_services(services: Mapping[str, Service]) -> set[str]:
    """Services that others wait for to *complete*: they are expected to exit, not to stay up."""
    found = set()
    for service in services.values():
        depends = service.get("depends_on") or {}
        if isinstance(depends, dict):
            for target, spec in depends.items():
                if isinstance(spec, dict) and spec.get("condition") == ONE_SHOT:
                    found.add(target)
    return found


def has_healthcheck(service: Service, image_healthcheck: bool = False) -> bool:
    """An explicit enabled healthcheck, or (image_healthcheck) the one of our own image, inherited."""
    check = service.get("healthcheck")
    if isinstance(check, dict):
        return not check.get("disable") and bool(check.get("test")) and check.get("test") != ["NONE"]
    return image_healthcheck


def healthcheck_problems(services: Mapping[str, Service], inherited: Mapping[str, bool]) -> list[str]:
    """Every long-running service has a health check. `inherited[name]`: its image brings one."""
    one_shots = one_shot_services(services)
    problems = []
    for name, service in services.items():
        if name in one_shots:
            if service.get("restart") not in (None, "no"):
                problems.append(f"{name}: a one-shot service must not be restarted ({service['restart']!r})")
            continue
        if not has_healthcheck(service, inherited.get(name, False)):
            problems.append(f"{name}: long-running service without a healthcheck")
    return problems


def depends_on_problems(services: Mapping[str, Service], inherited: Mapping[str, bool]) -> list[str]:
    problems = []
    for name, service in services.items():
        depends = service.get("depends_on")
        if depends is None:
            continue
        if not isinstance(depends, dict):
            problems.append(f"{name}: depends_on must name a condition for each service (long form)")
            continue
        for target, spec in depends.items():
            condition = spec.get("condition") if isinstance(spec, dict) else None
            if target not in services:
                problems.append(f"{name}: depends on unknown service {target!r}")
            elif condition not in CONDITIONS:
                problems.append(f"{name}: depends on {target!r} without a valid condition ({condition!r})")
            elif condition == "service_healthy" and not has_healthcheck(
                services[target], inherited.get(target, False)
            ):
                problems.append(f"{name}: waits for {target!r} to be healthy, but it has no healthcheck")
    return problems


# ---- volumes, ports, scaling ---------------------------------------------------------------------------


def _volume_source(spec: Any) -> str | None:
    if isinstance(spec, dict):
        return spec.get("source") if spec.get("type", "volume") == "volume" else None
    text = str(spec)
    if ":" not in text:
        return None  # anonymous volume
    source = text.split(":", 1)[0]
    return None if source.startswith((".", "/", "~", "$")) else source


def volume_problems(compose: Compose) -> list[str]:
    declared = set((compose.get("volumes") or {}).keys())
    used: set[str] = set()
    problems = []
    for name, service in (compose.get("services") or {}).items():
        for spec in service.get("volumes") or []:
            source = _volume_source(spec)
            if source is None:
                continue
            used.add(source)
            if source not in declared:
                problems.append(f"{name}: named volume {source!r} is not declared under volumes:")
    for volume in sorted(declared - used):
        problems.append(f"volume {volume!r} is declared but no service uses it")
    return problems


def mounts_of(service: Service) -> dict[str, str]:
    """target path -> named volume."""
    mounts = {}
    for spec in service.get("volumes") or []:
        source = _volume_source(spec)
        if source is None:
            continue
        target = spec["target"] if isinstance(spec, dict) else str(spec).split(":")[1]
        mounts[target] = source
    return mounts


def scalable_problems(name: str, service: Service) -> list[str]:
    """`docker compose up --scale NAME=N` needs no fixed container name and no published host port."""
    problems = []
    if "container_name" in service:
        problems.append(f"{name}: container_name prevents scaling")
    if service.get("ports"):
        problems.append(f"{name}: published ports clash when scaled (use expose)")
    return problems


def published_port_problems(services: Mapping[str, Service]) -> list[str]:
    """Host ports are for debugging only: bound to 127.0.0.1, never to every interface."""
    problems = []
    for name, service in services.items():
        for port in service.get("ports") or []:
            host_ip = port.get("host_ip") if isinstance(port, dict) else None
            if not isinstance(port, dict):
                parts = str(port).split(":")
                host_ip = parts[0] if len(parts) == 3 else None
            if host_ip != "127.0.0.1":
                problems.append(f"{name}: port {port!r} is published on every interface")
    return problems


# ---- PIPELINE_* variables against the configuration model --------------------------------------------------

_PIPELINE_VAR = re.compile(r"\bPIPELINE_[A-Za-z0-9_]+", re.IGNORECASE)


def pipeline_variables(text: str) -> set[str]:
    """Every PIPELINE_* name mentioned in a text (values, keys and comments alike)."""
    return set(_PIPELINE_VAR.findall(text))


def _plain(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _plain(members[0])
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def config_key_problem(variable: str, model: type[BaseModel], prefix: str = "PIPELINE_") -> str | None:
    """None if `variable` names a key of the settings model (nested with __, case-insensitive). A map of
    scalars (e.g. kafka.consumer) accepts any sub-key; a map of sections (topics) any name, then its keys."""
    if variable.upper() == "PIPELINE_CONFIG":
        return None  # the config file path, not a key
    if not variable.upper().startswith(prefix):
        return f"{variable}: not a {prefix}* variable"
    parts = variable[len(prefix) :].lower().split("__")
    current: Any = model
    i = 0
    while i < len(parts):
        part = parts[i]
        if not _is_model(current):
            return f"{variable}: {'.'.join(parts[:i])} has no sub-keys"
        fields = {name.lower(): info for name, info in current.model_fields.items()}
        if part not in fields:
            where = ".".join(parts[:i]) or "the top level"
            return f"{variable}: no key {part!r} in {where} (known: {', '.join(sorted(fields))})"
        annotation = _plain(fields[part].annotation)
        i += 1
        if get_origin(annotation) is dict:
            value = _plain(get_args(annotation)[1])
            if not _is_model(value):
                return None  # a map of scalars: any sub-key (or the whole map as JSON)
            if i < len(parts):
                i += 1  # the map key (a topic name), then that section's keys
            current = value
            continue
        current = annotation
    return None


def config_key_problems(variables: set[str], model: type[BaseModel]) -> list[str]:
    return [p for p in (config_key_problem(v, model) for v in sorted(variables)) if p]


# ---- Dockerfile ------------------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str

    def exec_form(self) -> list[str] | None:
        try:
            value = json.loads(self.args)
        except ValueError:
            return None
        return value if isinstance(value, list) else None


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages with their instructions (continuation lines joined, comments dropped, global ARGs resolved
    in FROM lines)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    if pending:
        logical.append(pending)
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "ARG" and not stages:
            name, _, default = args.partition("=")
            global_args[name] = default.strip("\"'")
            continue
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            base = interpolate(words[0], global_args)
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
            continue
        if not stages:
            raise ValueError(f"instruction before FROM: {line}")
        stages[-1].instructions.append(Instruction(keyword, args))
    return stages


_EXTRA_INSTALL = re.compile(r"\[[^\]]*\b(embedded|dev)\b[^\]]*\]")
_TEST_SERVERS = re.compile(r"calfkit|secantus", re.IGNORECASE)
_BUILD_TOOLS = re.compile(
    r"\b(gcc|g\+\+|clang|build-essential|make|cmake|python3-dev|python3\.\d+-dev|libc6-dev|cargo|rustc)\b"
)


def dockerfile_problems(stages: list[Stage], metrics_port: int) -> list[str]:
    problems = []
    if len(stages) < 2:
        problems.append("not a multi-stage build (one FROM)")
    for stage in stages:
        if stage.base in {s.name for s in stages if s.name}:
            continue  # FROM an earlier stage
        pin = image_pin_problem(stage.base)
        if pin:
            problems.append(f"FROM {pin}")
        for run in stage.all("RUN"):
            if _EXTRA_INSTALL.search(run.args) or _TEST_SERVERS.search(run.args):
                problems.append(f"stage {stage.name or stage.base}: installs test-only extras: {run.args}")
    if not stages:
        return problems or ["no FROM"]
    runtime = stages[-1]
    for run in runtime.all("RUN"):
        if _BUILD_TOOLS.search(run.args):
            problems.append(f"runtime stage installs build tools: {run.args}")
    user = runtime.last("USER")
    if user is None:
        problems.append("runtime stage runs as root (no USER)")
    elif user.args.split(":")[0] in ("root", "0"):
        problems.append(f"runtime stage runs as root (USER {user.args})")
    health = runtime.last("HEALTHCHECK")
    if health is None or health.args.upper().startswith("NONE"):
        problems.append("runtime stage has no HEALTHCHECK")
    elif "/healthz" not in health.args:
        problems.append("HEALTHCHECK does not probe the worker's /healthz")
    entrypoint = runtime.last("ENTRYPOINT")
    if entrypoint is None or entrypoint.exec_form() != ["pipeline"]:
        problems.append('ENTRYPOINT must be ["pipeline"] (exec form)')
    cmd = runtime.last("CMD")
    if cmd is None or cmd.exec_form() != ["run"]:
        problems.append('CMD must be ["run"] (exec form)')
    exposed = {p.split("/")[0] for e in runtime.all("EXPOSE") for p in e.args.split()}
    if str(metrics_port) not in exposed:
        problems.append(f"the metrics port {metrics_port} is not EXPOSEd")
    copies_from_build = [c for c in runtime.all("COPY") if c.args.startswith("--from=")]
    if len(stages) >= 2 and not copies_from_build:
        problems.append("runtime stage copies nothing from the build stage")
    return problems


def copy_sources(stages: list[Stage]) -> list[str]:
    """Paths COPYed from the build context (not --from another stage)."""
    sources = []
    for stage in stages:
        for copy in stage.all("COPY") + stage.all("ADD"):
            words = [w for w in shlex.split(copy.args) if not w.startswith("--")]
            if any(w.startswith("--from") for w in shlex.split(copy.args)):
                continue
            sources += words[:-1]
    return sources


def dockerignore_problems(text: str, sources: list[str], must_exclude: list[str]) -> list[str]:
    """The context is an allow-list ('*' first, then '!path' exceptions): every COPY source is allowed, and
    nothing in must_exclude is."""
    rules = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if not rules or rules[0] != "*":
        return ["does not start with '*' (exclude everything, then allow what the build needs)"]
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    problems = []
    for source in sources:
        top = source.strip("./").split("/")[0]
        if top not in allowed:
            problems.append(f"COPY source {source!r} is excluded from the build context")
    for path in must_exclude:
        if path.rstrip("/") in allowed:
            problems.append(f"{path!r} must not be in the build context")
    return problems


# ---- Kafka and MongoDB ------------------------------------------------------------------------------------


def kraft_problems(service: Service, bootstrap: str) -> list[str]:
    env = {k: v or "" for k, v in service_env(service).items()}
    problems = []
    roles = {r.strip() for r in env.get("KAFKA_PROCESS_ROLES", "").split(",") if r.strip()}
    if not {"broker", "controller"} <= roles:
        problems.append(f"KAFKA_PROCESS_ROLES must be broker,controller (got {sorted(roles)})")
    node = env.get("KAFKA_NODE_ID", "")
    voters = env.get("KAFKA_CONTROLLER_QUORUM_VOTERS", "")
    if not node:
        problems.append("KAFKA_NODE_ID is missing")
    if not re.search(rf"(^|,){re.escape(node)}@[^,:]+:\d+", voters):
        problems.append(f"KAFKA_CONTROLLER_QUORUM_VOTERS {voters!r} does not list node {node!r}")
    controller = env.get("KAFKA_CONTROLLER_LISTENER_NAMES", "")
    if not controller or f"{controller}://" not in env.get("KAFKA_LISTENERS", ""):
        problems.append("the controller listener is not among KAFKA_LISTENERS")
    if any("ZOOKEEPER" in key.upper() for key in env) or any("zookeeper" in v.lower() for v in env.values()):
        problems.append("ZooKeeper settings in a KRaft broker")
    advertised = [a.split("://", 1)[-1] for a in env.get("KAFKA_ADVERTISED_LISTENERS", "").split(",")]
    for server in bootstrap.split(","):
        if server.strip() not in advertised:
            problems.append(f"the clients' bootstrap server {server!r} is not an advertised listener")
    return problems


def kafka_image_problems(image: str, tested_version: str) -> list[str]:
    """The broker image: Apache Kafka's, the 4.x line (KRaft only, KIP-848 groups), and the very release the
    test-suite runs (everything else about Kafka is proved on that one)."""
    repository, _, tag = image.partition(":")
    problems = []
    if repository != "apache/kafka":
        problems.append(f"{image!r} is not Apache Kafka's image (apache/kafka)")
    release = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", tag)
    if release is None:
        return [*problems, f"{image!r}: the tag is not a Kafka release x.y.z"]
    if int(release[1]) < 4:
        problems.append(f"{image!r} is Kafka {tag}: the stack runs the Kafka 4 line")
    if tag != tested_version:
        problems.append(f"{image!r} is Kafka {tag}, but the test-suite runs Kafka {tested_version}")
    return problems


# Internal topics and what fails without them; Kafka's defaults (replication 3, min ISR 2) need three nodes.
INTERNAL_TOPIC_SETTINGS = {
    "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": (3, "consumer groups cannot commit offsets"),
    "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": (3, "transactional producers cannot start"),
    "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": (2, "transactions cannot complete"),
    "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": (3, "share groups cannot start"),
    "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": (2, "share groups cannot record their state"),
}


def internal_topic_problems(service: Service) -> list[str]:
    """Every internal topic fits the cluster: replication factor and min ISR at most its number of nodes."""
    env = {k: v or "" for k, v in service_env(service).items()}
    voters = [v for v in env.get("KAFKA_CONTROLLER_QUORUM_VOTERS", "").split(",") if v.strip()]
    nodes = max(1, len(voters))
    problems = []
    for key, (default, failure) in INTERNAL_TOPIC_SETTINGS.items():
        value = env.get(key, "")
        effective = int(value) if value.strip().isdigit() else default
        if effective > nodes:
            source = f"{key}={value}" if value else f"{key} unset (Kafka's default {default})"
            problems.append(f"{source} on a {nodes}-node cluster: {failure}")
    return problems


def _off(value: str | None, default: bool) -> bool:
    if value is None or not value.strip():
        return not default
    return value.strip().lower() in ("false", "0", "no", "off")


def dead_letter_topic_problems(kafka: Service, worker: Service, topic_init: Service) -> list[str]:
    """Without topic auto-creation the dead-letter topics must come from somewhere: the worker creates missing
    ones at start (errors.dead_letter.create_topics, on by default), or topic-init creates them."""
    kafka_env, worker_env = service_env(kafka), service_env(worker)
    if not _off(kafka_env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE"), default=True):
        return []
    if not _off(worker_env.get("PIPELINE_ERRORS__DEAD_LETTER__CREATE_TOPICS"), default=True):
        return []
    template = worker_env.get("PIPELINE_ERRORS__DEAD_LETTER__TOPIC") or "{topic}.dlq"
    suffix = template.replace("{topic}", "")
    script = " ".join(topic_init.get("command") or []) + " " + " ".join(topic_init.get("entrypoint") or [])
    if suffix and suffix in script:
        return []
    return [
        "auto-creation is off and the worker may not create dead-letter topics "
        f"(PIPELINE_ERRORS__DEAD_LETTER__CREATE_TOPICS), but topic-init does not create the {template!r} "
        "topics"
    ]


def replica_set_name(command: Any) -> str | None:
    text = " ".join(command) if isinstance(command, list) else str(command or "")
    match = re.search(r"--replSet[= ]+([A-Za-z0-9_-]+)", text)
    return match[1] if match else None


def replica_set_problems(mongo: Service, mongo_host: str, uri: str) -> list[str]:
    problems = []
    name = replica_set_name(mongo.get("command"))
    if name is None:
        return ["MongoDB does not run with --replSet"]
    test = (mongo.get("healthcheck") or {}).get("test") or []
    check = " ".join(test) if isinstance(test, list) else str(test)
    if "rs.initiate(" not in check:
        problems.append("nothing initiates the replica set (rs.initiate in the healthcheck)")
    elif not re.search(rf"""rs\.initiate\(\{{\s*_id:\s*["']{re.escape(name)}["']""", check):
        problems.append(f"rs.initiate does not initiate the replica set {name!r}")
    if mongo_host not in check:
        problems.append(f"rs.initiate does not name the member {mongo_host!r} that clients can resolve")
    if "isWritablePrimary" not in check:
        problems.append("the healthcheck does not wait for a writable primary")
    if f"replicaSet={name}" not in uri:
        problems.append(f"the worker's URI does not name replicaSet={name}")
    if "w=majority" not in uri:
        problems.append("the worker's URI does not ask for w=majority")
    return problems


def topic_init_problems(service: Service, topics: list[str], partitions: int) -> list[str]:
    script = " ".join(service.get("command") or []) + " " + " ".join(service.get("entrypoint") or [])
    problems = []
    if "/opt/kafka/bin/kafka-topics.sh" not in script:
        problems.append("does not use /opt/kafka/bin/kafka-topics.sh")
    if "--create" not in script or "--if-not-exists" not in script:
        problems.append("does not create the topics idempotently (--create --if-not-exists)")
    if f"--partitions {partitions}" not in script:
        problems.append(f"does not create {partitions} partitions")
    for topic in topics:
        if not re.search(rf"(?<![\w.-]){re.escape(topic)}(?![\w-])", script):
            problems.append(f"does not create topic {topic!r}")
    return problems


# ---- the read API and chart page (`pipeline serve`) -------------------------------------------------------


def _published_targets(service: Service) -> set[str]:
    """Container ports a service publishes (short 'ip:host:container' or long form)."""
    targets = set()
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            targets.add(str(port.get("target")))
        else:
            targets.add(str(port).split(":")[-1].split("/")[0])
    return targets


def web_problems(service: Service) -> list[str]:
    """`pipeline serve` in a container: reachable from outside it (binds 0.0.0.0), the published port is the
    one it listens on, its own health check probes /healthz on that port, it waits for MongoDB, and a token
    comes from the environment (never written into the file)."""
    problems = []
    if service.get("command") != ["serve"]:
        problems.append(f"command must be ['serve'], got {service.get('command')!r}")
    env = service_env(service)
    if env.get("PIPELINE_HTTP__HOST") != "0.0.0.0":
        problems.append(
            "PIPELINE_HTTP__HOST must be 0.0.0.0 (127.0.0.1 is unreachable from outside the container)"
        )
    port = env.get("PIPELINE_HTTP__PORT") or "8080"
    if port not in _published_targets(service) and port not in {str(p) for p in service.get("expose") or []}:
        problems.append(f"the HTTP port {port} is neither published nor exposed")
    test = (service.get("healthcheck") or {}).get("test") or []
    check = " ".join(test) if isinstance(test, list) else str(test)
    if "/healthz" not in check:
        problems.append("the healthcheck does not probe /healthz")
    elif port not in check and "PIPELINE_HTTP__PORT" not in check:
        problems.append(f"the healthcheck does not probe the HTTP port {port}")
    depends = service.get("depends_on") or {}
    mongo = depends.get("mongo") if isinstance(depends, dict) else None
    if not isinstance(mongo, dict) or mongo.get("condition") != "service_healthy":
        problems.append("does not wait for MongoDB to be healthy")
    token = env.get("PIPELINE_HTTP__TOKEN")
    if token is not None and token and not token.startswith("${"):
        problems.append("PIPELINE_HTTP__TOKEN is written into the file (use ${VARIABLE} or http.token_file)")
    return problems


def installs_extra(stages: list[Stage], extra: str) -> bool:
    """The image installs tickpipe with this extra (`.../tickpipe-*.whl[http]`, `.[http]`)."""
    pattern = re.compile(rf"(tickpipe|\.|whl)[^\s]*\[[^\]]*\b{re.escape(extra)}\b[^\]]*\]")
    return any(pattern.search(run.args) for stage in stages for run in stage.all("RUN"))
