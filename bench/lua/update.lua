-- PATCH the password of seeded credentials in turn (a secret update re-seals with a fresh data key).
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
local ids = {}
for id in string.gmatch(os.getenv("BENCH_IDS"), "[^,]+") do ids[#ids + 1] = id end
local i = 0
request = function()
  i = i + 1
  local body = string.format('{"password":"rotated-%d"}', i)
  return wrk.format("PATCH", "/api/v2/credentials/" .. ids[(i % #ids) + 1] .. "/", nil, body)
end
