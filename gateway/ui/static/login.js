// The key goes once, as a Bearer header (never in a URL); the answer sets an HttpOnly session cookie.
const form = document.getElementById("login");
const error = document.getElementById("login-error");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = document.getElementById("key").value.trim();
  error.textContent = "";
  const response = await fetch("/ui/login", {
    method: "POST",
    headers: { Authorization: `Bearer ${key}`, "X-Simgate-UI": "1" },
    credentials: "same-origin",
  });
  if (response.ok) {
    location.href = "/ui/";
    return;
  }
  const body = await response.json().catch(() => ({}));
  error.textContent = body.error || `refused (${response.status})`;
});
