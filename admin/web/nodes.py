"""The Nodes page: the live members of the cluster with their figures, or this node alone.

Read through ``AdminContext.cluster`` (``nanoiot.members.ClusterView``), never from the
broker: the admin does not import ``broker/``. Each member's figures are as of its last
heartbeat (``cluster_heartbeat_interval``); a single node's are as of now.
"""

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from admin.context import context_of
from admin.web.render import PREFIX, page
from admin.web.session import Session, current_session
from nanoiot.members import totals

router = APIRouter(include_in_schema=False)


@router.get(PREFIX + "/nodes")
async def nodes(
    request: Request,
    session: Session = Depends(current_session),  # noqa: B008
) -> Response:
    view = context_of(request).cluster
    members = view.members() if view is not None else []
    return page(
        request,
        "nodes.html",
        session=session,
        view=view,
        members=members,
        started={m.name: datetime.fromtimestamp(m.started, UTC) for m in members},
        total=totals(members),
        nav="nodes",
    )
