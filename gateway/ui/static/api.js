// The page's client of /ui/api. Changes carry X-Simgate-UI (the cookie alone is not enough for them).
export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

async function request(method, path, body) {
  const headers = { "X-Simgate-UI": "1" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(`/ui/api${path}`, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    location.href = "/ui/login";
    throw new ApiError("logged out", 401);
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(data.error || `${response.status} ${response.statusText}`, response.status);
  return data;
}

export const api = {
  get: (path) => request("GET", path),
  post: (path, body = {}) => request("POST", path, body),
  put: (path, body) => request("PUT", path, body),
  del: (path) => request("DELETE", path),
  // Server-sent events (the session cookie goes along); handlers: {eventName: (data) => ...}.
  // Returns a function that closes the stream.
  events(path, handlers, onstate = () => {}) {
    const source = new EventSource(`/ui/api${path}`);
    for (const [name, handler] of Object.entries(handlers)) {
      source.addEventListener(name, (event) => handler(JSON.parse(event.data)));
    }
    source.onopen = () => onstate("open");
    source.onerror = () => onstate(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
    return () => source.close();
  },
};
