-- crud.lua: how CRUD requests become calls (the lua plugin).
--
-- A CRUD message {type:"CRUD", id, op, resource, key?, data?, query?, to?}
-- becomes a CALL to `to`, or else to the service that declared the resource
-- in its REGISTER (resources: ["posts", ...]), method "<resource>.<op>",
-- params {resource, op, key, data, query} (absent members left out).  The
-- caller gets that call's RESPONSE (same id, same errors as any call); an
-- unknown resource is answered SERVICE_NOT_FOUND.
--
-- As shipped, every declared resource passes through unvalidated.  Declare
-- a resource here to validate or transform its requests:
--
--   resources = {
--     posts = {
--       service = "timeline",             -- when no service declares it (optional)
--       create = { required = { "content" }, types = { content = "string", tags = "array" } },
--       update = { required = { "content" } },
--       transform = function(req)         -- req: {op, resource, key, data, query}
--         if req.op == "create" then req.data.createdAt = bus.now() end
--         return req
--       end,
--     },
--   },
--
-- Types: "string", "number", "integer", "boolean", "object", "array", "null".
-- A request that fails validation is answered INVALID_MESSAGE naming the field.

return {
  resources = {
  },
}
