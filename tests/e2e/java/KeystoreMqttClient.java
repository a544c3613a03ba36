import java.io.FileInputStream;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.security.KeyStore;
import java.util.concurrent.TimeUnit;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;
import org.fusesource.mqtt.client.FutureConnection;
import org.fusesource.mqtt.client.MQTT;
import org.fusesource.mqtt.client.Message;
import org.fusesource.mqtt.client.QoS;
import org.fusesource.mqtt.client.Topic;

/**
 * A device as the product text's Java users run it: the client keystore written by
 * client.keygen.sh (CLIENT_FILE_PREFIX.jks, PKCS#12) serves as BOTH key store and trust store,
 * with the keystore password as the key password, and Debian's libmqtt-client-java
 * (org.fusesource.mqtt-client) speaks MQTT 3.1.1 over that SSLContext.
 *
 * <p>Usage: KeystoreMqttClient KEYSTORE PASSWORD HOST PORT CLIENT_ID TOPIC PAYLOAD
 *
 * <p>Subscribes to TOPIC, publishes PAYLOAD to it (QoS 1) and waits for it to come back. Prints
 * one line per step ("connected", "subscribed [granted QoS]", "published", "received TOPIC
 * PAYLOAD"); on a failed connect it prints "connect failed: MESSAGE" and exits 2. Every wait
 * is bounded, and the client never retries a connect.
 */
public final class KeystoreMqttClient {
  private static final long WAIT_SECONDS = 10;

  private KeystoreMqttClient() {}

  public static void main(String[] args) throws Exception {
    if (args.length != 7) {
      System.err.println(
          "usage: KeystoreMqttClient KEYSTORE PASSWORD HOST PORT CLIENT_ID TOPIC PAYLOAD");
      System.exit(64);
    }
    char[] password = args[1].toCharArray();
    String topic = args[5];
    byte[] payload = args[6].getBytes(StandardCharsets.UTF_8);

    KeyStore store = KeyStore.getInstance("PKCS12");
    try (InputStream in = new FileInputStream(args[0])) {
      store.load(in, password);
    }
    KeyManagerFactory keys = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
    keys.init(store, password);
    TrustManagerFactory trust =
        TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
    trust.init(store);
    SSLContext context = SSLContext.getInstance("TLS");
    context.init(keys.getKeyManagers(), trust.getTrustManagers(), null);

    MQTT mqtt = new MQTT();
    mqtt.setHost("ssl://" + args[2] + ":" + args[3]);
    mqtt.setSslContext(context);
    mqtt.setVersion("3.1.1");
    mqtt.setClientId(args[4]);
    mqtt.setCleanSession(true);
    mqtt.setConnectAttemptsMax(0);
    mqtt.setReconnectAttemptsMax(0);

    FutureConnection connection = mqtt.futureConnection();
    try {
      connection.connect().await(WAIT_SECONDS, TimeUnit.SECONDS);
    } catch (Exception e) {
      System.out.println("connect failed: " + e);
      System.out.flush();
      System.exit(2);
    }
    System.out.println("connected");
    byte[] granted =
        connection
            .subscribe(new Topic[] {new Topic(topic, QoS.AT_LEAST_ONCE)})
            .await(WAIT_SECONDS, TimeUnit.SECONDS);
    System.out.println("subscribed " + granted[0]);
    connection.publish(topic, payload, QoS.AT_LEAST_ONCE, false).await(WAIT_SECONDS, TimeUnit.SECONDS);
    System.out.println("published");
    Message message = connection.receive().await(WAIT_SECONDS, TimeUnit.SECONDS);
    message.ack();
    System.out.println(
        "received " + message.getTopic() + " " + new String(message.getPayload(), StandardCharsets.UTF_8));
    connection.disconnect().await(WAIT_SECONDS, TimeUnit.SECONDS);
    System.out.flush();
    System.exit(0);
  }
}
