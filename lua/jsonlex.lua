-- jsonlex.lua: named JSONLex expressions (the lua plugin).
--
-- JSONLex is the expression language of Exprsn: JSON values where an object
-- whose first key is an operator ($var, $eq, $ne, $gt, $lt, $and, $or, $not,
-- $if, $concat, $map, $filter, and the extensions $gte, $lte, $length,
-- $substring, $reduce, $get, $has) is evaluated.  lexbus evaluates it in C;
-- every distinct expression is compiled once and cached.
--
-- Use it from anywhere:
--   lexbus jsonlex '{"$gte":[{"$var":"age"},18]}' '{"age":25}'      -> true
--   lexbus call lexbus jsonlex '{"expr": ..., "context": {...}}'
--   lexbus call lexbus jsonlex '{"name": "adult", "context": {"age": 25}}'
--   bus.jsonlex(expr, context) in scripts; bus.jsonlex_compile(expr) returns
--   a compiled expression you call as f(context).
--
-- The expressions below are compiled when the scripts load and can be
-- evaluated by name.  Lua tables have no key order: an object with one "$"
-- key is read as that operator (keys are otherwise written sorted).  For
-- full control write the JSON text: bus.json.decode([[ {...} ]]).

return {
  expressions = {
    -- adult = { ["$gte"] = { { ["$var"] = "age" }, 18 } },
    -- fullName = { ["$concat"] = { { ["$var"] = "user.firstName" }, " ", { ["$var"] = "user.lastName" } } },
    -- activeAdmins = bus.json.decode([[
    --   {"$filter": {"array": {"$var": "users"}, "as": "u",
    --                "condition": {"$and": [{"$var": "u.active"},
    --                                       {"$eq": [{"$var": "u.role"}, "admin"]}]}}}
    -- ]]),
  },
}
