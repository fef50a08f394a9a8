"""Operator CLI, run with the service's own environment (e.g. `kubectl exec` into a pod):

    python -m aether_auth.admin rotate-keys             # new signing key now; old ones verify on
    python -m aether_auth.admin list-keys               # kids, state, verify-until
    python -m aether_auth.admin promote EMAIL admin     # plan and role admin (the first admin)
    python -m aether_auth.admin promote EMAIL --plan premium --role moderator

Changes go through the same code as the RPCs (events in the outbox, sessions revoked on a
demotion); the running service's relay publishes the events.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from aether_auth import repository
from aether_auth.app import AuthApp
from aether_auth.config import AuthSettings
from aether_auth.rbac import Plan, Role
from aether_auth.service import UserView
from aether_auth.validation import normalize_email
from aether_common.lifecycle import Component
from aether_common.logging import configure_logging
from aether_common.postgres import UnitOfWork
from aether_common.settings import SettingsError, load_settings

OPERATOR = "operator-cli"


def _say(text: str, *, error: bool = False) -> None:
    (sys.stderr if error else sys.stdout).write(text + "\n")


async def _with_store(settings: AuthSettings, action: str, args: argparse.Namespace) -> int:
    auth = AuthApp(settings)
    started: list[Component] = []
    try:
        needed: list[Component] = [auth.database, auth.redis, auth.keys]
        for component in needed:
            await component.start()
            started.append(component)
        if action == "rotate-keys":
            kid = await auth.keys.rotate_now()
            _say(f"new signing key {kid}; earlier keys verify until their tokens expire")
        elif action == "list-keys":
            async with auth.database.connection() as conn:
                for key in await repository.verifiable_signing_keys(conn):
                    state = "retired" if key.retired_at else "signing"
                    until = key.verify_until.isoformat() if key.verify_until else "-"
                    created = key.created_at.isoformat()
                    _say(f"{key.kid}\t{state}\tcreated {created}\tverify until {until}")
        else:
            return await _promote(auth, args)
        return 0
    finally:
        for component in reversed(started):
            await component.stop()


async def _promote(auth: AuthApp, args: argparse.Namespace) -> int:
    plan = Plan(args.plan) if args.plan else None
    role = Role(args.role) if args.role else None
    if args.level == "admin":
        plan, role = plan or Plan.ADMIN, role or Role.ADMIN
    if plan is None and role is None:
        _say("nothing to change: give `admin`, --plan or --role", error=True)
        return 2
    try:
        email = normalize_email(args.email)
    except ValueError as exc:
        _say(f"email {exc}", error=True)
        return 2

    async def change(uow: UnitOfWork) -> UserView | None:
        user = await repository.get_user_by_email(uow.conn, email, for_update=True)
        if user is None:
            return None
        return await auth.service.change_access(
            uow, user, plan=plan, role=role, changed_by=OPERATOR
        )

    view = await auth.database.transaction(change)
    if view is None:
        _say(f"no account with email {email}", error=True)
        return 1
    _say(f"{email}: plan {view.user.plan.value}, role {view.user.role.value}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aether_auth.admin", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("rotate-keys", help="make a new signing key now")
    commands.add_parser("list-keys", help="the keys that still verify tokens")
    promote = commands.add_parser("promote", help="change a user's plan and/or role")
    promote.add_argument("email")
    promote.add_argument("level", nargs="?", choices=["admin"], help="plan and role admin")
    promote.add_argument("--plan", choices=[p.value for p in Plan])
    promote.add_argument("--role", choices=[r.value for r in Role])
    args = parser.parse_args(argv)
    try:
        settings = load_settings(AuthSettings)
    except SettingsError as exc:
        _say(str(exc), error=True)
        return 2
    # Warnings only: stdout carries the command's answer (log lines go to stdout too).
    configure_logging("auth-admin", "WARNING", json=False)
    return asyncio.run(_with_store(settings, args.command, args))


if __name__ == "__main__":
    sys.exit(main())
