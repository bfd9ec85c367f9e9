"""The installable app: web app manifest and the service worker (install/offline shell).

The service worker is served from `/sw.js` so that its scope is the whole site; its
file lives in static/sw.js. Push handling comes with the notifications issue, in a
separate file the worker imports.
"""

import json

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from confide.web.pages.static import STATIC

router = APIRouter(include_in_schema=False)

MANIFEST = {
    "name": "Confide secure messages",
    "short_name": "Confide",
    "description": "Secure messages with your care team.",
    "start_url": "/",
    "scope": "/",
    "display": "standalone",
    "background_color": "#f6f7f9",
    "theme_color": "#1f5f8b",
    "icons": [
        {"src": "/static/icons/icon-192.png", "sizes": "192x192", "type": "image/png"},
        {"src": "/static/icons/icon-512.png", "sizes": "512x512", "type": "image/png"},
        {
            "src": "/static/icons/icon-maskable-512.png",
            "sizes": "512x512",
            "type": "image/png",
            "purpose": "maskable",
        },
    ],
}


@router.get("/manifest.webmanifest")
def manifest() -> Response:
    return Response(
        json.dumps(MANIFEST),
        media_type="application/manifest+json",
        headers={"Cache-Control": "public, max-age=3600"},
    )


@router.get("/sw.js")
def service_worker() -> Response:
    return FileResponse(
        STATIC / "sw.js",
        media_type="text/javascript",
        headers={"Cache-Control": "no-cache", "Service-Worker-Allowed": "/"},
    )
