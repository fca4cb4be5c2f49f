"""The page at `/ui`: servers, live calls, modes (and more views), served by the gateway itself.

- `routes`: the mount (page, static files, `/ui/api`), built on the admin API's handlers;
- `auth`: admin key at login, then a signed HttpOnly cookie; same Host/Origin rules as the admin API;
- `feed` and `calls`: the live-calls stream (server-sent events), bounded per viewer, free when unwatched;
- `views`: the list of views; how to add one is written there.

Static files (`static/`) are plain ES modules and CSS: no build step, nothing from a CDN.
"""
