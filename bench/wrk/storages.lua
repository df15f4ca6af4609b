-- Requests spread over many storages: each picks one of the storages listed in
-- BENCH_STORAGES_FILE (lines "id secret") and, in BENCH_PATH, "{id}" becomes its id and
-- "{k}" a random key number below BENCH_KEY_SPACE (seven digits); its Secret-Key header is
-- that storage's. BENCH_METHOD and BENCH_BODY_FILE as in request.lua.
local method = os.getenv("BENCH_METHOD") or "GET"
local path = os.getenv("BENCH_PATH") or "/"
local key_space = tonumber(os.getenv("BENCH_KEY_SPACE") or "10000")
local storages = {}
for line in io.lines(os.getenv("BENCH_STORAGES_FILE")) do
  local id, secret = string.match(line, "^(%S+)%s+(%S+)$")
  if id then storages[#storages + 1] = { id = id, secret = secret } end
end
local body = nil
local body_file = os.getenv("BENCH_BODY_FILE")
if body_file and body_file ~= "" then
  local file = assert(io.open(body_file, "rb"))
  body = file:read("*a")
  file:close()
end

math.randomseed(os.time() + math.floor(os.clock() * 1000000))

request = function()
  local storage = storages[math.random(1, #storages)]
  local target = string.gsub(path, "{id}", storage.id)
  target = string.gsub(target, "{k}", function()
    return string.format("%07d", math.random(0, key_space - 1))
  end)
  local headers = { ["Secret-Key"] = storage.secret, ["Content-Type"] = "text/plain" }
  return wrk.format(method, target, headers, body)
end
