"""What `POST /api/v1/realtime/token` answers."""

from __future__ import annotations

from pydantic import BaseModel, Field


class RealtimeToken(BaseModel):
    token: str = Field(description="Pass as `?token=` on the real-time service's /ws URL.")
    expires_in: int = Field(description="Seconds it is valid for (connect within them).")
    scope: str = Field(description="The scope of the key it stands for.")
