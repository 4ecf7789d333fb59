-- POST a new basic credential with a unique name per request (to BENCH_PATH, default the credentials route).
math.randomseed(os.time() + os.clock() * 1000000)
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
local n = 0
local path = os.getenv("BENCH_PATH") or "/api/v2/credentials/"
local prefix = os.getenv("BENCH_PREFIX") .. tostring(os.time()) .. "-" .. tostring(math.random(1, 1000000000))
request = function()
  n = n + 1
  local body = string.format('{"name":"%s-%d","credentialType":"basic","user":"u","password":"p%d"}', prefix, n, n)
  return wrk.format("POST", path, nil, body)
end
