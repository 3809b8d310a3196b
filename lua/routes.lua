-- routes.lua: routing and transform rules for lexbus (the lua plugin).
--
-- Copy this folder, point `dir` of [plugin lua] at the copy, edit, and run
-- `kill -HUP $(pidof lexbusd)` (or `lexbus call lexbus reload`): every script is compiled
-- into a fresh Lua state and swapped in only if all of them load; otherwise
-- the log names file, line and error and the previous rules keep serving.
--
-- The file returns a list of rules.  A rule selects messages by one of
--   event    = "post:*"                EMIT, by event pattern (* = one segment,
--                                       > = one or more trailing segments)
--   call     = "user-service.get*"     CALL, by SERVICE.METHOD (split at the first
--                                       '.'; '*' matches any run of characters)
--   call     = { service = "billing.eu", method = "charge" }   (a '.' in the name)
--   response = "user-service.getUser"  the RESPONSE to such a call, on its way back
-- optionally narrowed by  from = "svc" or from = { "a", "b" }  (the sender),
-- and then either runs a Lua function
--   fn = function(m) ... end
-- or fixed actions that never enter Lua:
--   to = "svc"  rename = "new:name"  transform = <JSONLex>  also = { "svc" }
--   refuse = { code = "FORBIDDEN", message = "..." }
--
-- m (the message view) has type, id, from, to, event or method, service and
-- status (RESPONSE: the call's service and method), payload (EMIT), params
-- (CALL), data / error (RESPONSE), context, claims (verified token claims),
-- each made (JSON decoded) when the rule first reads it.
--
-- Event and call rules run on messages as they come in, before the bus
-- routes them; response rules on RESPONSEs on their way back to the caller.
-- fn returns nil to pass the message on unchanged, false to refuse it
-- (FORBIDDEN), bus.refuse(code, message), or a table of changes:
--   { to = ..., event = ..., method = ..., payload = ..., params = ...,
--     data = ..., error = {code=, message=}, also = { "svc", ... } }
-- (returning m itself after editing m.payload works too).
-- A runtime error, a runaway loop or a memory bomb in fn ends that message
-- with SCRIPT_ERROR (naming the script and line); everyone else is served.
--
-- Messages no rule selects never enter Lua (the selection is done in C).

return {
  -- Examples (uncomment to enable):

  -- Refuse deletes of users, everywhere, with a fixed answer:
  -- { name = "no-user-deletes", call = "user-service.delete*",
  --   refuse = { code = "FORBIDDEN", message = "users are not deleted on this bus" } },

  -- Send calls for the old service name to the new one:
  -- { name = "users-moved", call = "users.*", to = "user-service" },

  -- Copy every order event to the audit service as well (fan-out):
  -- { name = "order-audit", event = "order:>", also = { "audit-service" } },

  -- Slim a payload with a JSONLex transform (evaluated in C):
  -- { name = "post-summary", event = "post:created",
  --   transform = { id = { ["$var"] = "payload.id" },
  --                 title = { ["$var"] = "payload.title" },
  --                 by = { ["$var"] = "from" } } },

  -- Tag events in Lua:
  -- { name = "tag-posts", event = "post:*",
  --   fn = function(m)
  --     local p = m.payload
  --     if type(p) ~= "table" then return nil end
  --     p.seenBy = "lexbus"
  --     return { payload = p }
  --   end },

  -- Only admins may call admin methods (token claims, from [plugin tokens]):
  -- { name = "admins-only", call = "*.admin*",
  --   fn = function(m)
  --     local c = m.claims
  --     if type(c) == "table" and c.data and c.data.role == "admin" then return nil end
  --     return bus.refuse("FORBIDDEN", "admin methods need an admin token")
  --   end },

  -- Hide a field in results:
  -- { name = "no-password-hash", response = "user-service.getUser*",
  --   fn = function(m)
  --     if type(m.data) == "table" then m.data.passwordHash = nil; return m end
  --   end },
}
