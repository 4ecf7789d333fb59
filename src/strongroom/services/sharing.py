"""Sharing a credential: who holds which role on it, changing roles, and groups of users.

Roles (DataRobot's names): OWNER may do everything, including sharing and delete; EDITOR may change the
credential and its secrets, and share if granted `canShare` (never granting more than EDITOR); CONSUMER sees
its metadata and uses it by id. A credential always has its owner; giving the owner a lower role or NO_ROLE
hands ownership to another user who holds OWNER after the change (its secret is re-sealed for them, in the
same transaction), else it is refused (409).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from strongroom import credential_types
from strongroom.errors import Conflict, Forbidden, InvalidInput, NotFound
from strongroom.services.accounts import Principal
from strongroom.services.audit import Event
from strongroom.services.credentials import CredentialService, is_id
from strongroom.services.roles import EDITOR, OWNER, ROLE_NAMES, access_entries, role_rank
from strongroom.store.models import Group, new_id, utcnow
from strongroom.store.repositories.sharing import GroupNameTaken, NameTaken, SharingRepository

RECIPIENT_TYPES = ("user", "group")
MAX_CHANGES = 100


class SharingService:
    """Roles on credentials, and groups."""

    def __init__(self, sharing: SharingRepository, credentials: CredentialService) -> None:
        self.sharing = sharing
        self.credentials = credentials

    def _access(self, who: Principal, credential_id: str) -> tuple[str, str, int, bool]:
        """(owner id, name, the caller's role, may share) for a credential the caller has a role on, else 404."""
        found = self.sharing.access(credential_id, who.user_id) if is_id(credential_id) else None
        if found is None or found[2] is None:
            raise NotFound("credential not found")
        owner_id, name, role, can_share = found
        return owner_id, name, int(role), can_share or role == OWNER  # type: ignore[arg-type]

    def access_list(self, who: Principal, credential_id: str) -> list[dict[str, Any]]:
        """Everyone with a role on the credential, its owner first: {id, name, role, shareRecipientType,
        canShare}."""
        who.require("read")
        owner_id, _, _, _ = self._access(who, credential_id)
        owner_name = self.sharing.users_by_id([owner_id]).get(owner_id, owner_id)
        return access_entries(owner_id, owner_name, self.sharing.roles(credential_id))

    def update_roles(self, who: Principal, credential_id: str, body: Mapping[str, Any]) -> None:
        """Apply a DataRobot `updateRoles` body: each recipient (user by `username` or `id`, group by `id` or
        `name`) gets the role, or loses access with NO_ROLE; all changes apply together or none does."""
        who.require("write")
        owner_id, name, role, can_share = self._access(who, credential_id)
        changes = parse_role_changes(body)
        if role != OWNER and not (role == EDITOR and can_share):
            raise Forbidden(
                f"your role on this credential is {ROLE_NAMES[role]}; sharing needs OWNER, or EDITOR with canShare",
                {"role": "needs OWNER or EDITOR with canShare"},
            )
        resolved = resolve_recipients(self.sharing, changes)
        current = {(kind, rid): r for kind, rid, r, _, _ in self.sharing.roles(credential_id)}
        if role != OWNER:
            for kind, rid, new, _ in resolved:
                touched = current.get((kind, rid))
                if (new is not None and new > EDITOR) or touched == OWNER or (kind, rid) == ("user", owner_id):
                    raise Forbidden(
                        "an EDITOR may share as EDITOR or CONSUMER, and may not change an OWNER's role",
                        {"role": "needs OWNER"},
                    )
        rows = [(kind, rid, new, share) for kind, rid, new, share in resolved if (kind, rid) != ("user", owner_id)]
        owner_now = next((new for kind, rid, new, _ in resolved if (kind, rid) == ("user", owner_id)), OWNER)
        transfer = None
        if owner_now != OWNER:  # the owner steps down: a user holding OWNER after the change takes over
            after = {**current, **{(kind, rid): new for kind, rid, new, _ in resolved}}
            heirs = [rid for (kind, rid), rank in after.items() if kind == "user" and rank == OWNER and rid != owner_id]
            if not heirs:
                raise Conflict(
                    "roles: the change would leave the credential without an owner; give another user OWNER in "
                    "the same change (a group cannot own a credential)",
                    {"roles": "would leave no owner"},
                )
            heir = heirs[-1]  # the last named (a new OWNER in this change comes after the existing ones)
            transfer = self.credentials.handover(credential_id, heir)
            rows = [row for row in rows if row[:2] != ("user", heir)] + [("user", heir, None, False)]
            if owner_now is not None:
                rows.append(("user", owner_id, owner_now, False))
        event = Event(
            "credential.share",
            204,
            who,
            credential_id=credential_id,
            credential_name=name,
            owner_id=owner_id,
            detail={
                "roles": [
                    {"type": kind, "id": rid, "role": ROLE_NAMES.get(new, "NO_ROLE") if new else "NO_ROLE"}
                    for kind, rid, new, _ in rows
                ]
            },
        )
        if transfer is not None:
            event = replace(event, detail={**event.detail, "newOwnerId": transfer["new_owner"]})
        try:
            applied = self.sharing.set_roles(credential_id, rows, utcnow(), event.entry(), transfer)
        except NameTaken:
            raise Conflict(
                f"roles: the new owner already has a credential named {name[:80]!r}; rename one first",
                {"roles": "name in use by the new owner"},
            ) from None
        if not applied:
            raise Conflict("credential: changed by another request during this change; retry", {"credential": "busy"})

    # ---- groups (administrators; the CLI acts as one) ---------------------------------------------------

    def create_group(self, who: Principal | None, name: str) -> Group:
        """Create a group, audited; 409 if the name is taken."""
        _admin(who)
        group = Group(id=new_id(), name=credential_types.check_name(name), created_at=utcnow())
        entry = Event("group.create", 201, who, detail={"groupId": group.id, "group": group.name}).entry()
        try:
            self.sharing.add_group(group, entry)
        except GroupNameTaken:
            raise Conflict(f"name: group {group.name!r} already exists", {"name": "already in use"}) from None
        return group

    def list_groups(self, who: Principal | None) -> list[dict[str, Any]]:
        _admin(who)
        return [{"id": g.id, "name": g.name, "members": members} for g, members in self.sharing.groups()]

    def add_member(self, who: Principal | None, group: str, username: str) -> bool:
        """Add a member, audited (adding one already there changes and records nothing)."""
        _admin(who)
        gid, user_id = self._group(group), self._user(username)
        detail = {"groupId": gid, "group": group, "userId": user_id, "username": username}
        return self.sharing.add_member(gid, user_id, Event("group.add_member", 204, who, detail=detail).entry())

    def remove_member(self, who: Principal | None, group: str, username: str) -> bool:
        """Remove a member, audited; their access through the group ends with this call."""
        _admin(who)
        gid, user_id = self._group(group), self._user(username)
        detail = {"groupId": gid, "group": group, "userId": user_id, "username": username}
        return self.sharing.remove_member(gid, user_id, Event("group.remove_member", 204, who, detail=detail).entry())

    def delete_group(self, who: Principal | None, group: str) -> None:
        """Delete a group and every role given to it, audited."""
        _admin(who)
        gid = self._group(group)
        if not self.sharing.delete_group(
            gid, Event("group.delete", 204, who, detail={"groupId": gid, "group": group}).entry()
        ):
            raise NotFound(f"group {group!r} not found")

    def _group(self, key: str) -> str:
        found = self.sharing.groups_by(ids=[key], names=[key])
        if key not in found:
            raise NotFound(f"group {key!r} not found")
        return found[key][0]

    def _user(self, username: str) -> str:
        found = self.sharing.users_named([username])
        if username not in found:
            raise NotFound(f"user {username!r} not found")
        return found[username]


# What an `updateRoles` body and each of its entries may hold (DataRobot's `SharingRole` payload); anything
# else is refused rather than ignored, so a misspelt or unsupported setting never passes as applied.
BODY_KEYS = frozenset({"operation", "roles"})
ENTRY_KEYS = frozenset({"shareRecipientType", "username", "id", "name", "role", "canShare"})
RoleChange = tuple[str, str, str, int | None, bool]  # (type, key, key kind, role rank or None, can_share)


def parse_role_changes(body: Mapping[str, Any]) -> list[RoleChange]:
    """An `updateRoles` body's changes (credentials and data stores alike); 422 naming the first bad field."""
    _no_other_keys(body, BODY_KEYS, "")
    if body.get("operation") != "updateRoles":
        raise InvalidInput('operation: must be "updateRoles"', {"operation": 'must be "updateRoles"'})
    roles = body.get("roles")
    if not isinstance(roles, list) or not roles:
        raise InvalidInput("roles: must be a non-empty list", {"roles": "must be a non-empty list"})
    if len(roles) > MAX_CHANGES:
        raise InvalidInput(f"roles: at most {MAX_CHANGES} changes", {"roles": f"at most {MAX_CHANGES}"})
    parsed = []
    seen = set()
    for i, item in enumerate(roles):
        where = f"roles[{i}]"
        if not isinstance(item, dict):
            raise InvalidInput(f"{where}: must be an object", {where: "must be an object"})
        _no_other_keys(item, ENTRY_KEYS, f"{where}.")
        kind = item.get("shareRecipientType", "user")
        if kind not in RECIPIENT_TYPES:
            msg = "must be user or group"
            raise InvalidInput(f"{where}.shareRecipientType: {msg}", {f"{where}.shareRecipientType": msg})
        if "username" in item:
            key, key_kind = item["username"], "username"
        elif "id" in item:
            key, key_kind = item["id"], "id"
        elif "name" in item:
            key, key_kind = item["name"], "name"
        else:
            msg = "needs username or id"
            raise InvalidInput(f"{where}: {msg}", {where: msg})
        if (
            not isinstance(key, str)
            or not key
            or len(key) > credential_types.NAME_MAX
            or credential_types.has_control(key)
        ):
            msg = "must be a non-empty string without control characters"
            raise InvalidInput(f"{where}.{key_kind}: {msg}", {f"{where}.{key_kind}": msg})
        rank = role_rank(item.get("role"), field=f"{where}.role", allow_none=True)
        share = item.get("canShare", rank == OWNER)
        if not isinstance(share, bool):
            raise InvalidInput(f"{where}.canShare: must be true or false", {f"{where}.canShare": "boolean"})
        if (kind, key) in seen:
            msg = f"names the same {kind} as an earlier entry"
            raise InvalidInput(f"{where}: {msg}", {where: msg})
        seen.add((kind, key))
        parsed.append((kind, key, key_kind, rank, share))
    return parsed


def resolve_recipients(
    sharing: SharingRepository, changes: Sequence[RoleChange]
) -> list[tuple[str, str, int | None, bool]]:
    """The changes with recipients by id; 404 naming the first unknown user or group; 422 if two entries name
    one recipient."""
    users = [k for kind, k, how, _, _ in changes if kind == "user" and how == "username"]
    user_ids = [k for kind, k, how, _, _ in changes if kind == "user" and how != "username"]
    by_name = sharing.users_named(users)
    by_id = sharing.users_by_id(user_ids)
    groups = sharing.groups_by(
        ids=[k for kind, k, how, _, _ in changes if kind == "group" and how == "id"],
        names=[k for kind, k, how, _, _ in changes if kind == "group" and how != "id"],
    )
    resolved = []
    seen = set()
    for i, (kind, key, how, rank, share) in enumerate(changes):
        if kind == "user":
            rid = by_name.get(key) if how == "username" else (key if key in by_id else None)
        else:
            rid = groups[key][0] if key in groups else None
        if rid is None:
            raise NotFound(f"roles[{i}]: no {kind} {key!r}", {f"roles[{i}]": f"unknown {kind}"})
        if (kind, rid) in seen:
            raise InvalidInput(f"roles[{i}]: names the same {kind} twice", {f"roles[{i}]": "duplicate recipient"})
        seen.add((kind, rid))
        resolved.append((kind, rid, rank, share))
    return resolved


def _no_other_keys(obj: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    """422 naming the first key of `obj` (in sorted order) that is not `allowed`; `where` prefixes its field."""
    unknown = sorted(k for k in obj if k not in allowed)
    if unknown:
        field = f"{where}{unknown[0][:80]}"
        raise InvalidInput(f"{field}: is not a known setting", {field: "is not a known setting"})


def _admin(who: Principal | None) -> None:
    """Administrators only; None is local administration (the CLI on the server machine)."""
    if who is not None:
        who.require("admin")
