"""The dashboard at `/`: server-rendered pages over the service layer (docs/api.md, "Dashboard")."""

from gantry.api.http.dashboard.routes import router

__all__ = ["router"]
