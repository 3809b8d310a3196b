# The lua plugin: JSONLex, rules, the sandbox, reloads (real daemon).
LUA_TESTS = lua/test_jsonlex.py lua/test_rules.py lua/test_sandbox.py lua/test_reload.py lua/test_crud.py lua/test_live.py lua/test_socketio.py lua/test_default_config.py
TESTS += $(LUA_TESTS)
EXTRA_DIST += $(LUA_TESTS) lua/luatest.py lua/jsonlex-cases.jsonl
