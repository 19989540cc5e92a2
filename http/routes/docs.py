"""The API's description: GET /openapi.json (OpenAPI 3.1) and GET /docs (Swagger UI rendering it).

Both are public: they describe the API, they expose no data. The page works offline: Swagger UI's
script and styles are served from the installed `swagger-ui-bundle-v2` package under
/docs/assets, never from a CDN.
"""

from __future__ import annotations

import html
import json

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from clarion.http.openapi import build_openapi

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Clarion API</title>
  <link rel="stylesheet" href="{assets}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{assets}/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{assets}/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: {spec},
      dom_id: "#swagger-ui",
      deepLinking: true,
      validatorUrl: null,
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout"
    }});
  </script>
</body>
</html>
"""


async def openapi_json(request: Request) -> JSONResponse:
    # Built once per process, on first use: the routes do not change while the app runs. Not
    # strict: a route someone forgot to describe is listed as such, the page still works.
    spec = getattr(request.app.state, "openapi", None)
    if spec is None:
        spec = request.app.state.openapi = build_openapi(request.app.routes, strict=False)
    return JSONResponse(spec)


async def docs_page(request: Request) -> HTMLResponse:
    # Root-relative links (with the app's root_path behind a proxy): nothing leaves this host.
    root = request.scope.get("root_path", "").rstrip("/")
    page = _PAGE.format(assets=html.escape(f"{root}/docs/assets"),
                        spec=json.dumps(f"{root}/openapi.json"))
    return HTMLResponse(page)


routes = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs_page, methods=["GET"]),
    Mount("/docs/assets", app=StaticFiles(directory=swagger_ui_path), name="docs-assets"),
]
