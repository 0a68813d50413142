// Swagger UI over this server's own description. validatorUrl: null keeps the page from
// sending the description to validator.swagger.io (the page loads nothing from outside).
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    tryItOutEnabled: false,
  });
});
