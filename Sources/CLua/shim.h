#ifndef QW_CLUA_SHIM_H
#define QW_CLUA_SHIM_H
#include <lua5.4/lua.h>
#include <lua5.4/lualib.h>
#include <lua5.4/lauxlib.h>

/* Lua's API macros, as functions Swift can call. */
static inline int qwl_pcall(lua_State *L, int n, int r, int f) { return lua_pcall(L, n, r, f); }
static inline const char *qwl_tostring(lua_State *L, int i) { return lua_tolstring(L, i, NULL); }
static inline void qwl_pop(lua_State *L, int n) { lua_settop(L, -(n)-1); }
static inline void qwl_newtable(lua_State *L) { lua_createtable(L, 0, 0); }
static inline int qwl_upvalueindex(int i) { return lua_upvalueindex(i); }
static inline int qwl_registryindex(void) { return LUA_REGISTRYINDEX; }
static inline int qwl_isnoneornil(lua_State *L, int i) { return lua_type(L, i) <= 0; }
static inline void qwl_insert(lua_State *L, int i) { lua_rotate(L, i, 1); }
static inline void qwl_remove(lua_State *L, int i) { lua_rotate(L, i, -1); lua_settop(L, -2); }
static inline void qwl_replace(lua_State *L, int i) { lua_copy(L, -1, i); lua_settop(L, -2); }
static inline lua_Number qwl_tonumber(lua_State *L, int i) { return lua_tonumberx(L, i, NULL); }
static inline lua_Integer qwl_tointeger(lua_State *L, int i) { return lua_tointegerx(L, i, NULL); }
static inline void qwl_pushglobaltable(lua_State *L) { lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS); }
static inline int qwl_isinteger(lua_State *L, int i) { return lua_isinteger(L, i); }
#endif
