// Swagger UI 5 for /docs (it renders OpenAPI 3.1), from files this server serves itself (no
// CDN; the CSP allows no inline script, hence this file). No validator: it would call out.
window.addEventListener("load", () => {
  window.SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", validatorUrl: null });
});
