"""docs/configuration.md, generated from the ``setting(...)`` declarations.

The page is this module's output and nothing else, so a setting added, renamed or
re-documented in ``certctl.config._settings`` reaches the docs by regenerating:

    python -m certctl.config.reference > docs/configuration.md

and tests/unit/test_config_docs.py fails until that has been done.
"""

from __future__ import annotations

from certctl.config._display import shown_value
from certctl.config._settings import SPECS, Role, Section, Var
from certctl.config._validate import EXAMPLE_SECRETS

REGENERATE = "python -m certctl.config.reference > docs/configuration.md"

_INTRO = """\
# Configuration

<!-- Generated from certctl/config/_settings.py; do not edit. Regenerate with
{regenerate} -->

certctl reads its settings from `CERTCTL_*` environment variables (or an env file passed
with `--env-file`, whose values the process environment overrides). Two rules hold for
every variable:

- **An empty value counts as unset** and takes the default.
- **A value that does not parse is an error naming the variable**, never a silent fallback:
  `CERTCTL_SERVER_PORT=abc certctl config check` exits 2 with
  `CERTCTL_SERVER_PORT='abc' does not parse: expected a whole number ...`.

Types: *bool* accepts `true/false`, `1/0`, `yes/no`, `on/off`; *duration* is Go-style
(`500ms`, `30s`, `5m`, `1h30m`, `7d`); *list* is comma-separated with blanks dropped; *path*
expands `~`.

Each variable is read by the server, the agent, or both (the *Read by* column).
`certctl config check [--role server|agent] [--env-file FILE]` prints the variables that
role reads, with every secret redacted, and runs the checks that process runs before it
starts: for the server that includes the TLS preflight (certificate and key set, readable,
parseable, matching, currently valid and naming `CERTCTL_SERVER_HOST`), for the agent the
host policy file, the control-plane URL and its CA bundle. It exits 0 when that process
would start, 2 with a one-line reason when it would be refused.
`certctl config init --out certctl.env` writes an env file with freshly generated secrets
and a self-signed TLS pair (in `tls/` beside it, or `--tls-dir`) that passes the check.

## Variables
"""

_TABLE_HEAD = """\
| Variable | Read by | Default | Meaning and validation |
|---|---|---|---|"""

_OUTRO = """\
## Example values are refused

Outside demo mode the server refuses any secret (API keys, bootstrap token, encryption key,
the database URL's password) that starts with `change-me` or equals one of the example
values used in documentation (`PlaceholderCredential`):

<!-- example-secrets -->
{secrets}
<!-- /example-secrets -->
"""


def render() -> str:
    """The whole of docs/configuration.md."""
    parts = [_INTRO.format(regenerate=REGENERATE)]
    for section in Section:
        rows = [_row(spec) for spec in SPECS.values() if spec.section is section]
        parts.append(f"### {section.value}\n\n{_TABLE_HEAD}\n" + "\n".join(rows) + "\n")
    secrets = "\n".join(f"- `{value}`" for value in sorted(EXAMPLE_SECRETS))
    parts.append(_OUTRO.format(secrets=secrets))
    return "\n".join(parts)


def _row(spec: Var) -> str:
    readers = "both" if len(spec.roles) == len(Role) else " ".join(sorted(spec.roles))
    meaning = spec.doc
    if spec.minimum is not None:
        meaning += f" Minimum `{shown_value(spec.minimum)}` (`SchedulerIntervalTooShort`)."
    if spec.secret:
        meaning += " Secret: redacted in every output."
    return f"| `{spec.env}` | {readers} | {_default(spec)} | {meaning} |"


def _default(spec: Var) -> str:
    if spec.default_doc is not None:
        return spec.default_doc
    if spec.default is None or spec.default in ("", ()):
        return "unset"
    return f"`{shown_value(spec.default)}`"


if __name__ == "__main__":
    print(render(), end="")
