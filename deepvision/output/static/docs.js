// Swagger UI for /docs, from files this server serves itself (no CDN; the CSP allows no inline
// script, hence this file).
window.addEventListener("load", () => {
  window.SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui" });
});
