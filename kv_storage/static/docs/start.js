// Starts the Swagger UI on this service's own API document, and on nothing else: the page
// takes no configuration from its address (queryConfigEnabled: false), so a link such as
// /api/docs?url=<another document> cannot show a page that looks like ours but sends what a
// user types (tokens, secrets) to another server.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/api/docs/openapi.json",
    dom_id: "#swagger-ui",
    queryConfigEnabled: false,
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
