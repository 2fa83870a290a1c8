"""``hanode import-drbdlinks``: copy a drbdlinks config's links into hanode.toml.

/etc/drbdlinks.conf is Python that drbdlinks executes. hanode never executes it: the
``ast`` module parses it, and only calls of ``mountpoint(...)`` and ``link(...)`` with
literal arguments are taken; every other statement is listed as not imported, with
what to do instead. Paths are completed exactly as drbdlinks does it (trailing slashes
stripped; ``link(PATH)`` alone means ``MOUNTPOINT/PATH``). The [links] section is
written with tomlkit, so the rest of hanode.toml keeps its comments and layout.
"""

from __future__ import annotations

import ast
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.exceptions
from tomlkit.items import Comment, Table, Whitespace

from hanode import config as hconfig
from hanode.errors import ConfigError
from hanode.resources.links import LinkSpec

# drbdlinks' other directives, with what hanode does instead (or why it does not)
_OTHER_DIRECTIVES = {
    "restartSyslog": "hanode restarts nothing after linking; list rsyslog.service in "
    "[services] if syslog must follow the links",
    "restartCron": "hanode restarts nothing after linking; list cron.service in [services] "
    "if cron must follow the links",
    "usebindmount": "hanode makes symlinks only, never bind mounts",
    "selinux": "hanode does not copy SELinux contexts (chcon) onto the links",
    "debug": "hanode logs to the journal; use `hanode --debug` for more",
    "cleanthisconfig": "hanode has no boot-time cleanup of links (drbdlinksclean); "
    "`hanode stop` restores the originals",
}
_OTHER_DIRECTIVES["restartsyslog"] = _OTHER_DIRECTIVES["restartSyslog"]
_OTHER_DIRECTIVES["restartcron"] = _OTHER_DIRECTIVES["restartCron"]


@dataclass
class ImportReport:
    """What was read from the drbdlinks config and what was written to hanode.toml."""

    conf: Path
    toml_path: Path
    mountpoint: str | None = None
    links: list[LinkSpec] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)  # "FILE:LINE: `code`: why"
    notes: list[str] = field(default_factory=list)  # imported, but worth a look
    replaced_links: int | None = None  # links in the [links] section replaced, if any
    created: bool = False  # hanode.toml did not exist

    def lines(self) -> list[str]:
        """The report for the admin, one line each."""
        where = f"mountpoint {self.mountpoint}" if self.mountpoint else "no mountpoint()"
        out = [f"read {self.conf}: {where}, {len(self.links)} links"]
        out += [f"  {link.path} -> {link.target}" for link in self.links]
        if self.created:
            out.append(f"created {self.toml_path} with a [links] section")
        elif self.replaced_links is not None:
            out.append(
                f"replaced the existing [links] section of {self.toml_path} "
                f"(it had {self.replaced_links} links)"
            )
        else:
            out.append(f"added a [links] section to {self.toml_path}")
        out += [f"note: {note}" for note in self.notes]
        if self.unsupported:
            out.append(f"NOT imported ({len(self.unsupported)}), review these by hand:")
            out += [f"  {item}" for item in self.unsupported]
        out.append("next: `hanode check`, then stop drbdlinks from running at boot")
        return out


@dataclass
class _Parsed:
    mountpoint: str | None = None
    links: list[tuple[str, str | None]] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def read_drbdlinks(conf: Path) -> _Parsed:
    """The mountpoint and links of a drbdlinks config, parsed (never executed)."""
    try:
        text = conf.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{conf}: no such file", "give the drbdlinks config: hanode import-drbdlinks FILE"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{conf}: cannot read: {err}") from None
    try:
        tree = ast.parse(text, filename=str(conf))
    except SyntaxError as err:
        raise ConfigError(
            f"{conf}:{err.lineno}: not valid Python ({err.msg}), so not a drbdlinks config",
            "fix it, or copy the links into [links] by hand",
        ) from None
    parsed = _Parsed()
    bind_mounts = False
    for statement in tree.body:
        where = f"{conf}:{statement.lineno}"
        code = ast.get_source_segment(text, statement) or ast.dump(statement)
        call = _directive(statement)
        if call is None:
            parsed.unsupported.append(
                f"{where}: `{code}`: not a drbdlinks directive (the file is not executed)"
            )
            continue
        name, args, keywords = call
        problem: str | None
        if name == "mountpoint":
            if parsed.mountpoint is not None:
                parsed.notes.append(f"{where}: mountpoint() given again; the last one counts")
            problem = _mountpoint(parsed, args, keywords)
        elif name == "link":
            problem = "a bind mount (usebindmount(1) is on)" if bind_mounts else None
            problem = problem or _link(parsed, args, keywords)
        else:
            if name == "usebindmount":
                bind_mounts = bool(_literal_flag(args, keywords, "enabled", default=1))
            problem = _OTHER_DIRECTIVES.get(name, "not a drbdlinks directive hanode knows")
        if problem:
            parsed.unsupported.append(f"{where}: `{code}`: {problem}")
    return parsed


def _directive(statement: ast.stmt) -> tuple[str, list[ast.expr], list[ast.keyword]] | None:
    if not isinstance(statement, ast.Expr) or not isinstance(statement.value, ast.Call):
        return None
    call = statement.value
    if not isinstance(call.func, ast.Name):
        return None
    return call.func.id, list(call.args), list(call.keywords)


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError):
        return _NOT_LITERAL


_NOT_LITERAL = object()


def _literal_flag(
    args: list[ast.expr], keywords: list[ast.keyword], name: str, default: int
) -> Any:
    for keyword in keywords:
        if keyword.arg == name:
            return _literal(keyword.value)
    return _literal(args[0]) if args else default


def _mountpoint(parsed: _Parsed, args: list[ast.expr], keywords: list[ast.keyword]) -> str | None:
    if len(args) != 1 or not isinstance(path := _literal(args[0]), str):
        return "mountpoint() needs one literal string"
    parsed.mountpoint = path.rstrip("/") or "/"
    for keyword in keywords:
        if keyword.arg != "shared":
            return f"mountpoint() has no argument {keyword.arg!r}"
        if _literal(keyword.value) not in (0, False):
            return "shared = 1 (mount --make-shared) is not supported (the path is imported)"
    return None


def _link(parsed: _Parsed, args: list[ast.expr], keywords: list[ast.keyword]) -> str | None:
    if keywords:
        names = ", ".join(str(keyword.arg) for keyword in keywords)
        return f"link() with keyword arguments ({names}) is not supported"
    if not 1 <= len(args) <= 2:
        return "link() takes the path and optionally the target"
    values = [_literal(arg) for arg in args]
    if not all(isinstance(value, str) and value for value in values):
        return "link() arguments must be literal strings"
    source = values[0].rstrip("/")
    target = values[1].rstrip("/") if len(values) == 2 else None
    parsed.links.append((source, target))
    return None


def import_drbdlinks(conf: Path, toml_path: Path) -> ImportReport:
    """Read ``conf`` (a drbdlinks config) and write its links as hanode.toml's [links].

    The result is checked with hanode's own config loader before anything is written;
    an invalid result raises ConfigError and leaves hanode.toml untouched.
    """
    parsed = read_drbdlinks(conf)
    # drbdlinks then runs every drbdlinks.d/*.conf beside it, in the same namespace
    for extra in sorted((conf.parent / "drbdlinks.d").glob("*.conf")):
        more = read_drbdlinks(extra)
        parsed.notes.append(f"also read {extra}, as drbdlinks does")
        parsed.mountpoint = more.mountpoint or parsed.mountpoint
        parsed.links += more.links
        parsed.unsupported += more.unsupported
        parsed.notes += more.notes
    report = ImportReport(
        conf, toml_path, parsed.mountpoint, unsupported=parsed.unsupported, notes=parsed.notes
    )
    for source, given in parsed.links:
        target = given
        if target is None:
            if parsed.mountpoint is None:
                raise ConfigError(
                    f"{conf}: link({source!r}) needs a mountpoint() to complete the target",
                    "add mountpoint('/srv') to it, or give link() two arguments",
                )
            # as drbdlinks: link('/etc/x') alone is MOUNTPOINT/etc/x
            target = os.path.join(parsed.mountpoint, source.lstrip("/")).rstrip("/")
        report.links.append(LinkSpec(source, target))
    if not report.links:
        raise ConfigError(f"{conf}: no link() lines found", "nothing to import")

    document, report.created = _load_toml(toml_path)
    old = document.get("links")
    if old is not None:
        old_links = old.get("links") if isinstance(old, dict) else None
        report.replaced_links = len(old_links) if isinstance(old_links, list) else 0
    table = _links_table(report, old if isinstance(old, Table) else None)
    if old is not None:
        document["links"] = table
    else:
        document.add("links", table)
    text = tomlkit.dumps(document)
    try:
        hconfig.parse(text, toml_path)
    except ConfigError as err:
        raise ConfigError(
            f"the imported links would make {toml_path} invalid: {err.message}",
            f"{toml_path} was not changed; fix {conf} or the rest of hanode.toml first",
        ) from None
    try:
        _write(toml_path, text)
    except OSError as err:
        raise ConfigError(f"cannot write {toml_path}: {err.strerror}") from None
    return report


def _load_toml(path: Path) -> tuple[tomlkit.TOMLDocument, bool]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        document = tomlkit.document()
        document.add(tomlkit.comment("hanode configuration; see hanode.toml(5)"))
        return document, True
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from None
    try:
        return tomlkit.parse(text), False
    except tomlkit.exceptions.ParseError as err:
        raise ConfigError(f"{path}:{err.line}: invalid TOML, not changed: {err}") from None


def _links_table(report: ImportReport, old: Table | None) -> Table:
    table = tomlkit.table()
    leading, trailing = _surrounding_comments(old) if old is not None else ([], [])
    if old is not None:
        # the comment on the [links] header line itself
        table.trivia.comment_ws = old.trivia.comment_ws
        table.trivia.comment = old.trivia.comment
    for item in leading:
        table.add(item)
    table.add(tomlkit.comment(f"imported from {report.conf} by `hanode import-drbdlinks`"))
    if report.mountpoint is not None:
        table.add("mountpoint", report.mountpoint)
    links = tomlkit.array()
    for link in report.links:
        entry = tomlkit.inline_table()
        entry.update({"path": link.path, "target": link.target})
        links.append(entry)
    links.multiline(True)
    table.add("links", links)
    for item in trailing:
        table.add(item)
    return table


def _surrounding_comments(old: Table) -> tuple[list[Any], list[Any]]:
    """The comments before the first key and after the last key of the old [links].

    The ones after the last key usually belong to the next section (tomlkit files a
    comment above a header under the section before it): they must stay in place.
    """
    body = old.value.body
    keyed = [index for index, (key, _) in enumerate(body) if key is not None]
    if not keyed:
        return [item for _, item in body if isinstance(item, Comment | Whitespace)], []
    leading = [item for _, item in body[: keyed[0]] if isinstance(item, Comment | Whitespace)]
    trailing = [item for _, item in body[keyed[-1] + 1 :] if isinstance(item, Comment | Whitespace)]
    return leading, trailing


def _write(path: Path, text: str) -> None:
    """Replace ``path`` atomically, keeping its owner and mode (root:root 0644 if new)."""
    target = Path(os.path.realpath(path))
    try:
        st = os.stat(target)
        mode, uid, gid = st.st_mode & 0o7777, st.st_uid, st.st_gid
    except FileNotFoundError:
        mode, uid, gid = 0o644, os.geteuid(), os.getegid()
    descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        if (uid, gid) != (os.geteuid(), os.getegid()):
            os.chown(temporary, uid, gid)
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise
